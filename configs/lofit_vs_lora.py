"""LoFiT vs LoRA vs full fine-tuning (Yin, Ye and Durrett 2024, "LoFiT: Localized Fine-tuning
on LLM Representations"; Hu et al. 2021, "LoRA").

    python -m experiments.lofit_vs_lora --config=configs/lofit_vs_lora.py \
        --workdir=workdirs/lofit_vs_lora

Claim (LoFiT's abstract): LoFiT "achieves comparable performance to other parameter-efficient
fine-tuning methods such as LoRA, despite modifying 20x-200x fewer parameters".

MEASURED: (filled in below)
"""

from ml_collections import ConfigDict


def get_config():
    c = ConfigDict()
    c.seed = 0  # the trainer's seed (init of the methods' params, data order)
    c.data_dir = ""  # "" means <workdir>/data
    # induction data (jaxinterp/data/induction.py); `seed` is set per task below
    c.data = ConfigDict(dict(vocab_size=32, half_len=8, min_half_len=4, bos=True,
                             placement="random", skip_prob=0.5, num_train=4096, num_test=256))
    c.base_data_seed = 0  # the base's task (skip-bigram permutation of this seed)
    c.new_data_seed = 1  # the new task: another permutation
    c.model = ConfigDict(dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=32,
                              n_ctx=17))  # attn_only_2l with these fields
    c.batch_size = 32
    c.base_steps = 600
    c.base_lr = 3e-3
    c.warmup_steps = 20
    c.weight_decay = 0.0  # 0: `full` is exactly fine-tuning every weight
    c.num_steps = 300  # steps of every adaptation run
    c.lrs = (3e-3, 1e-2, 3e-2)  # the same grid for every method and size
    c.lofit_scale_lr = 1e-2  # stage 1 (head selection), one run
    c.lofit_l1 = 1e-3  # the authors' l1_lambda range: 5e-4 to 1e-3
    c.lofit_ks = (1, 2, 4, 8)  # heads given biases (8 = every head)
    c.lora_ranks = (1, 2, 4, 8)
    c.lora_targets = ("blocks_*/attn/W_Q", "blocks_*/attn/W_K", "blocks_*/attn/W_V",
                      "blocks_*/attn/W_O")
    c.lora_alpha_per_rank = 1.0  # alpha = r (alpha / r = 1)
    c.full = True  # full fine-tuning arm
    return c
