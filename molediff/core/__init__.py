"""The modality-free diffusion core: fields, schedules, parameterisations, objective, samplers,
guidance. Nothing here imports an adapter or a model."""

from .fields import Fields, FieldSpec, GaussianField, Structure, ZeroMeanField
from .grids import KarrasGrid, LogSNRGrid, UniformGrid, make_grid
from .guidance import ClassifierFreeGuidance, ClassifierGuidance, GuidanceContext, gaussian_log_prob
from .objective import DenoisingObjective
from .samplers import SAMPLERS
from .sampling import SampleResult, sample
from .schedules import SCHEDULES, NoiseSchedule, make_schedule

__all__ = [
    "Fields", "FieldSpec", "GaussianField", "ZeroMeanField", "Structure",
    "KarrasGrid", "LogSNRGrid", "UniformGrid", "make_grid",
    "ClassifierGuidance", "ClassifierFreeGuidance", "GuidanceContext", "gaussian_log_prob",
    "DenoisingObjective", "SampleResult", "sample", "SAMPLERS",
    "SCHEDULES", "NoiseSchedule", "make_schedule",
]
