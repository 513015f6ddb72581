"""The numbers of Menegola et al. (2017), AUC in %, shown beside a faithful run's results.

Table 1: Atlas, VGG-M, the paper's six cells; Table 2: ISIC 2016 official split, VGG-16,
imagenet+ft; Table 3: imagenet+ft per network; Table 4: Atlas, VGG-M, imagenet+ft by diagnostic
difficulty.
"""

from __future__ import annotations

import pandas as pd

from pipeline.data.designs import DESIGNS
from pipeline.data.vocabulary import DIFFICULTY_LEVELS
from pipeline.protocol import TABLE1_CELLS

# Menegola et al. (2017), AUC in %. Table 1: Atlas, VGG-M; Table 3: imagenet+ft per network;
# Table 2: ISIC 2016 official split, VGG-16, imagenet+ft; Table 4: Atlas, VGG-M, imagenet+ft.
PAPER_TABLE1 = pd.DataFrame([[76.0, 72.8, 76.0, 79.1, 82.5, 78.8],
                             [75.7, 73.5, 75.3, 77.9, 80.9, 80.9],
                             [73.0, 71.4, 72.8, 79.4, 83.6, 81.8]],
                            index=list(DESIGNS), columns=list(TABLE1_CELLS))


PAPER_TABLE3 = pd.DataFrame([[82.5, 80.9, 83.6], [83.8, 83.5, 84.5]],
                            index=["vgg-m", "vgg16"], columns=list(DESIGNS))  # registry names


PAPER_TABLE2 = {"auc": 80.7, "ap": 54.9, "accuracy": 79.2, "sensitivity": 47.6,
                "specificity": 88.1}  # keys: metrics.csv columns


PAPER_TABLE4 = pd.DataFrame([[93.7, 82.5, 58.8, 82.5], [93.0, 79.6, 56.6, 80.9]],
                            index=["malignant_vs_benign", "melanoma_vs_benign"],
                            columns=[*DIFFICULTY_LEVELS, "all"])
