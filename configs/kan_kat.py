"""KAN and KAT (`experiments/kan_kat.py`): KAT against ViT on digits with KAT's initialisation
ablated, function fitting by every KAN basis, the selectable mix and a parameter-matched MLP,
B-spline grid extension, and training step time.

    python -m experiments.kan_kat --config=configs/kan_kat.py --workdir=workdirs/kan_kat

Papers and claims:
  KAT (Yang & Wang 2024, arXiv:2409.10594): a ViT whose MLPs are group-rational KANs beats the
    ViT of the same size (ImageNet: KAT-T 74.6% vs DeiT-T 72.2%); its variance-preserving
    initialisation (rationals starting as identity / swish) matters against a random one.
  S-KAN (Yang et al. 2024, arXiv:2408.08338): a KAN whose edges select among several activation
    spaces (B-spline, Chebyshev, wavelets, ...) "outperforms baseline methods in seven
    representative function fitting tasks and significantly surpasses MLP methods with the
    same level of parameters".
  pykan (Liu et al. 2024, arXiv:2404.19756): refining a B-spline grid (coarse to fine) during
    training lowers the loss; KANs train ~10x slower than MLPs of the same parameter count.

The S-KAN paper's seven functions could not be read here (only its abstract); the fit uses
seven of pykan's toy formulas (`experiments.kan_kat.FUNCTIONS`).

Runtime on 2 CPU cores: TO BE MEASURED.
Measured at this config: TO BE MEASURED.
"""

from ml_collections import ConfigDict

from jaxinterp.train.config import base_config


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)  # vmapped in every part
    c.parts = ("kat", "fit", "grid", "speed")
    c.data_dir = ""  # "" means <workdir>/data (the digits TFDS builder)

    # (a) ViT and KAT of the same shape on the 8x8 digits (configs/digits/{vit,kat}.py's
    # shape: patch 2, 2 blocks of width 32, 4 heads of 8, MLP 64); KAT's GR-KANs have 8 groups.
    c.kat = ConfigDict()
    c.kat.model = ConfigDict(dict(image_size=8, in_channels=1, num_classes=10, patch_size=2,
                                  n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64,
                                  init_range=0.1))
    c.kat.vit = True  # train the ViT arm (the test leaves it out: only the init ablation)
    c.kat.grkan_groups = 8
    c.kat.grkan_init = "swish"  # fc2's rational (fc1's starts as the identity), as the paper
    c.kat.random_std = 0.5  # the ablation: every rational coefficient ~ N(0, random_std^2)
    c.kat.steps = 500
    c.kat.batch_size = 72
    c.kat.eval_every = 50
    c.kat.optimizer = base_config().optimizer  # AdamW, warmup + cosine, clip 1.0
    c.kat.optimizer.update(learning_rate=3e-3, warmup_steps=50, weight_decay=1e-4)

    # (b) KANs [d, 5, 1] per basis (B-spline G=5 k=3 and RBF 8 centres, each + the silu base:
    # 9 parameters per edge; Chebyshev degree 8: 9; Fourier 4 frequencies: 8), the mix of all
    # four (38 per edge), MLPs [d, h, 1] matched to them; full-batch Adam.
    c.fit = ConfigDict()
    c.fit.functions = ("exp(sin(pi x)+y^2)", "xy", "exp(J0(20x)+y^2)", "sqrt(x^2+y^2)",
                       "sin(pi x)sin(pi y)", "(x+y)/(1+xy)",
                       "exp((sin(pi(x1^2+x2^2))+sin(pi(x3^2+x4^2)))/2)")
    c.fit.n_train = 1000  # pykan's create_dataset defaults
    c.fit.n_test = 1000
    c.fit.data_seed = 0
    c.fit.hidden = (5,)
    c.fit.grid_size = 5
    c.fit.rbf_centers = 8
    c.fit.rbf_range = (-1.0, 1.0)  # the data's range, as the B-spline grid's
    c.fit.degree = 8
    c.fit.n_freq = 4
    c.fit.mlp_act = "silu"
    c.fit.steps = 1500
    c.fit.lr = 1e-2
    c.fit.eval_every = 100
    c.fit.grid_update_every = 200  # B-spline grids adapted to the data (pykan's update_grid)
    c.fit.grid_update_until = 800

    # (c) pykan Example 1: KAN [2, 1, 1] on exp(sin(pi x) + y^2), grids 3 -> 5 -> 10 -> 20.
    c.grid = ConfigDict()
    c.grid.function = "exp(sin(pi x)+y^2)"
    c.grid.hidden = (1,)
    c.grid.grids = (3, 5, 10, 20)
    c.grid.steps_per_grid = 400
    c.grid.lr = 1e-2
    c.grid.eval_every = 50
    # grids adapted to the data at steps 0, 50, ..., 200 of the first stage (and of the
    # fixed-grid run), as pykan's fit does early on
    c.grid.grid_update_every = 50
    c.grid.grid_update_until = 250
    c.grid.n_train = 1000
    c.grid.n_test = 1000
    c.grid.data_seed = 0

    # (d) step time at batch 256 on digits: B-spline KAN 64-64-10, GR-KAN and MLP 64-h-10 with
    # h matching its parameter count, and (a)'s ViT and KAT.
    c.speed = ConfigDict()
    c.speed.batch_size = 256
    c.speed.kan_hidden = 64
    c.speed.models = ("kan_bspline", "grkan", "mlp", "vit", "kat", "vit_relu")
    c.speed.repeats = 5
    c.speed.steps_per_repeat = 10
    return c
