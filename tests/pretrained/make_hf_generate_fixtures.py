"""Writes `data/NAME_generate.npz`: Hugging Face greedy `generate` on the committed tiny decoder
checkpoints (`gpt2`, `llama`, `llama_tied`, written by make_hf_fixtures.py), the reference of
`tests/pretrained/test_generate_hf.py`.

Per model, with a fixed prompt `prompt` [2, 6] (ids in [1, 100)):
  tokens [2, 6 + 10]      greedy (`do_sample=False`), 10 new tokens, no EOS
  logits [2, 10, vocab]   the scores HF chose each new token from (`output_logits=True`)
  eos_token_id            the 4th new token of row 0's greedy run
  eos_tokens [2, 16]      greedy with that eos_token_id and pad_token_id=PAD (99): a row
                          stops at its first EOS and is padded with PAD after it

Like make_hf_fixtures.py this needs PyTorch and transformers in a venv outside the repo
(jaxinterp does not depend on them); generated with torch 2.13.0+cpu, transformers 5.23.0:

    python3.11 -m venv /tmp/hfgen && /tmp/hfgen/bin/pip install torch==2.13.0 transformers
    cd <repo root> && /tmp/hfgen/bin/python tests/pretrained/make_hf_generate_fixtures.py

It only reads the checkpoints and writes the three `*_generate.npz` files.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch
import transformers

DATA = pathlib.Path(__file__).resolve().parent / "data"
DECODERS = ("gpt2", "llama", "llama_tied")
PROMPT = np.random.RandomState(7).randint(1, 100, (2, 6))
NEW, PAD = 10, 99


def _generate(model, eos: int | None) -> tuple[np.ndarray, np.ndarray]:
    ids = torch.tensor(PROMPT)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                             min_new_tokens=0, do_sample=False, eos_token_id=eos,
                             pad_token_id=PAD, output_logits=True, return_dict_in_generate=True)
    return out.sequences.numpy(), torch.stack(out.logits, 1).numpy()


def main() -> None:
    for name in DECODERS:
        model = transformers.AutoModelForCausalLM.from_pretrained(DATA / name)
        model.eval()
        model.generation_config.eos_token_id = None
        model.generation_config.bos_token_id = None
        tokens, logits = _generate(model, None)
        eos = int(tokens[0, PROMPT.shape[1] + 3])
        eos_tokens, _ = _generate(model, eos)
        if eos_tokens.shape[1] < tokens.shape[1]:  # every row stopped: pad to full length
            pad = np.full((2, tokens.shape[1] - eos_tokens.shape[1]), PAD, eos_tokens.dtype)
            eos_tokens = np.concatenate([eos_tokens, pad], 1)
        np.savez_compressed(DATA / f"{name}_generate.npz", prompt=PROMPT.astype(np.int32),
                            tokens=tokens.astype(np.int32), logits=logits.astype(np.float32),
                            eos_token_id=np.int32(eos), pad_token_id=np.int32(PAD),
                            eos_tokens=eos_tokens.astype(np.int32))
        print(name, tokens.tolist(), "eos", eos, eos_tokens.tolist())


if __name__ == "__main__":
    main()
