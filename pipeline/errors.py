"""The one exception type for errors a user can act on.

Every message names the file, the row or the key at fault, what is allowed, what was received and
the fix. The command line prints the message (no traceback) and exits with status 2.
"""


class PipelineError(ValueError):
    """An error in the user's input or set-up, with a message that says how to fix it.

    A ``ValueError``, as scikit-learn's parameter errors are, so callers that catch bad values
    catch these too.
    """


class WeightsUnavailable(PipelineError):
    """Pretrained weights that cannot be found or downloaded here.

    Attributes:
        reason: what is missing, e.g. "ImageNet weights for vgg16 are not in the Keras cache and
            cannot be downloaded offline".
        fix: what to do, e.g. "place vgg16_weights_tf_dim_ordering_tf_kernels.h5 in ~/.keras/models".
    """

    def __init__(self, reason: str, fix: str):
        super().__init__(f"{reason}. Fix: {fix}.")
        self.reason = reason
        self.fix = fix
