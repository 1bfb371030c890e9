"""Training: AVID (Cross/Self/Joint), AVID-CMA and Robust-xID pretraining, and finetuning for action recognition,
in one process or under torchrun."""

from .finetune import FinetuneConfig, finetune, load_finetune_config
from .loop import PretrainConfig, load_config, pretrain
from .losses import AVIDCMALoss, AVIDLoss, MemoryBank, RobustXIDLoss, build_criterion, nce_loss
from .runs import read_metrics

__all__ = ["PretrainConfig", "pretrain", "load_config", "read_metrics", "AVIDLoss", "AVIDCMALoss", "RobustXIDLoss",
           "MemoryBank", "build_criterion", "nce_loss", "FinetuneConfig", "finetune", "load_finetune_config"]
