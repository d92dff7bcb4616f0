"""Model architectures (dense, GQA, MoE, SSM, hybrids) from Hugging Face config.json."""

from infersim.models.catalog import get_model, load_model_config, models
from infersim.models.spec import DTYPE_BYTES, ModelSpec, model_from_hf_config

__all__ = ["DTYPE_BYTES", "ModelSpec", "get_model", "load_model_config", "model_from_hf_config",
           "models"]
