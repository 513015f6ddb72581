"""The one exception type for errors a user can act on.

Every message names the file, the row or the key at fault, what is allowed, what was received and
the fix. The command line prints the message (no traceback) and exits with status 2.
"""


class PipelineError(Exception):
    """An error in the user's input or set-up, with a message that says how to fix it."""
