"""Fine-pruning: personalize a pretrained network to one person's unlabeled data by pruning the
connections that person does not use -- no labels, no backprop."""
from fineprune.engine.baselines import backprop_finetune, bn_adapt, prior_em, svd_compress
from fineprune.engine.bundle import ModelBundle, load_bundle, save_bundle
from fineprune.engine.calibration import recalibrate_batchnorm
from fineprune.engine.criteria import CRITERIA, register_criterion
from fineprune.engine.energy import EnergyRecord, LayerEnergy, record_energy
from fineprune.errors import FinePruneError
from fineprune.engine.evaluation import accuracy, count_flops, evaluate
from fineprune.person.jobs import Job
from fineprune.engine.masks import apply_masks, make_permanent
from fineprune.engine.pipeline import DEFAULT_SETTINGS, PruneResult, PruneSettings, PruningSweep, fine_prune

__all__ = [
    "CRITERIA", "DEFAULT_SETTINGS", "EnergyRecord", "FinePruneError", "Job", "LayerEnergy", "ModelBundle",
    "PruneResult", "PruneSettings", "PruningSweep", "accuracy", "apply_masks", "backprop_finetune", "bn_adapt",
    "count_flops", "evaluate", "fine_prune", "load_bundle", "make_permanent", "prior_em", "recalibrate_batchnorm",
    "record_energy", "register_criterion", "save_bundle", "svd_compress",
]
__version__ = "0.1.0"
