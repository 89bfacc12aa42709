"""The narrow surface through which tandem uses torchtune.

torchtune is no longer maintained upstream. Users expect its CLI (``tune run``), its YAML configs with
``_component_`` and its checkpoints, so we use it, but every import of torchtune in this repository goes
through this module (a test enforces it). Moving off torchtune later means re-implementing the names
below, nothing else.
"""

from __future__ import annotations

import warnings

# torchao 0.15 warns on import that its C++ extensions do not match the CPU torch build; harmless here.
warnings.filterwarnings("ignore", message="Skipping import of cpp extensions")

from torchtune import config  # noqa: E402  (config.parse, config.instantiate)
from torchtune.data import Message  # noqa: E402  (SFT: a chat turn with its role and loss mask)
from torchtune.models.convert_weights import tune_to_hf  # noqa: E402  (torchtune -> HF key names, q/k permutation)
from torchtune.models.llama3 import llama3  # noqa: E402  (decoder-only transformer builder)
from torchtune.models.llama3_2 import llama3_2  # noqa: E402  (component builder: tied embeddings, SmolLM2)
from torchtune.modules import TransformerDecoder, TransformerSelfAttentionLayer  # noqa: E402
from torchtune.modules.transforms.tokenizers import (  # noqa: E402
    HuggingFaceBaseTokenizer,
    ModelTokenizer,
)
from torchtune.training import (  # noqa: E402
    FullModelHFCheckpointer,
    compile_model,
    get_distributed_backend,
    get_dtype,
    get_world_size_and_rank,
    set_activation_checkpointing,
    set_seed,
    shard_model,
)
from torchtune.training.lr_schedulers import get_cosine_schedule_with_warmup  # noqa: E402
from torchtune.training.metric_logging import (  # noqa: E402
    DiskLogger,
    MetricLoggerInterface,
    StdoutLogger,
    TensorBoardLogger,
    WandBLogger,
)
from torchtune.utils import get_logger  # noqa: E402

__all__ = [
    "tune_to_hf",
    "config",
    "Message",
    "llama3",
    "llama3_2",
    "FullModelHFCheckpointer",
    "TransformerDecoder",
    "TransformerSelfAttentionLayer",
    "HuggingFaceBaseTokenizer",
    "ModelTokenizer",
    "compile_model",
    "get_distributed_backend",
    "get_dtype",
    "get_world_size_and_rank",
    "set_activation_checkpointing",
    "set_seed",
    "shard_model",
    "get_cosine_schedule_with_warmup",
    "DiskLogger",
    "TensorBoardLogger",
    "WandBLogger",
    "MetricLoggerInterface",
    "StdoutLogger",
    "get_logger",
]
