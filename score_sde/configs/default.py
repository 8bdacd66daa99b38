"""Defaults shared by every experiment: the original's CIFAR-10 defaults (configs/default_cifar10_configs.py
of score_sde_pytorch), knob for knob, plus our data location. No device: run_lib picks it."""
import ml_collections


def get_default_configs() -> ml_collections.ConfigDict:
    """The shared defaults; an experiment file takes them and changes what differs."""
    config = ml_collections.ConfigDict()

    config.training = training = ml_collections.ConfigDict()
    training.batch_size = 128
    training.n_iters = 1300001
    training.snapshot_freq = 50000
    training.log_freq = 50
    training.eval_freq = 100
    training.snapshot_freq_for_preemption = 10000  # the resume point in checkpoints-meta/
    training.snapshot_sampling = True  # draw samples at each snapshot
    training.likelihood_weighting = False
    training.continuous = True
    training.reduce_mean = False
    training.sde = None  # 'vpsde', 'subvpsde' or 'vesde': every experiment names its SDE
    # Ours (docs/training.md): the density of the training time t ('uniform', 'lognormal': EDM's
    # ln σ ~ N(lognormal_mean, lognormal_std²), 'importance': ∝ g²/s² for the likelihood weighting) and the
    # objective's weighting ('score_matching', 'likelihood', 'edm'; unset: 'likelihood' if
    # likelihood_weighting, else 'score_matching'). The density changes the variance, not the objective.
    training.t_sampling = "uniform"
    training.weighting = ml_collections.config_dict.placeholder(str)
    training.lognormal_mean = -1.2
    training.lognormal_std = 1.2
    # Ours (docs/performance.md): 'fp32', or 'bf16' autocast with float32 weights and optimizer state; and
    # a torch.compile mode for the network ('default', 'reduce-overhead', 'max-autotune'; unset: eager).
    training.precision = "fp32"
    training.compile = ml_collections.config_dict.placeholder(str)
    # Ours, for a class-conditional network (model.num_classes > 0; docs/guidance.md): the probability of
    # training an item on the null class instead of its label, so one network also learns the
    # unconditional score that classifier-free guidance needs.
    training.class_dropout = 0.1

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.snr = 0.16
    sampling.method = "pc"  # 'pc', 'ode', or our 'fast' (sampling/fast.py, docs/fast_sampling.md)
    # Ours, for method 'fast': the solver, its number of steps and the time grid ('auto': the recommended ones
    # for the SDE and steps, sampling/fast.py RECOMMENDED); eta for 'ddim', churn for 'heun_churn'.
    sampling.solver = "auto"
    sampling.steps = 20
    sampling.schedule = "auto"
    sampling.eta = 1.0
    sampling.churn = 5.0
    # Ours: adams_pc's options when sampling.solver names it ('auto' sets its own and ignores these):
    # predictor order 1-4, 'data' or 'noise' prediction, a lowered order on the last steps, and the damping of
    # the predictor's highest difference on long steps (0: none; solvers.AdamsPC).
    sampling.order = 2
    sampling.prediction = "data"
    sampling.lower_order_final = False
    sampling.damping = 0.0
    # Ours: a torch.compile mode for one PC step ('reduce-overhead': CUDA graphs on a GPU; unset: eager).
    sampling.compile = ml_collections.config_dict.placeholder(str)
    sampling.predictor = None  # every experiment names its predictor and corrector
    sampling.corrector = None
    # Ours, for --mode inpaint / colorize / superres (docs/controllable.md): the images to complete (a split
    # of config.data or a folder of image files) and how many; the inpainting mask (a name in
    # observations.MASKS, or a PNG: nonzero pixels are known); the super-resolution factor; the observation
    # noise (model-space units); the method ('smc', or the paper's 'replacement' on the PC sampler above)
    # with the particle filter's particles per sample and steps (unset: model.num_scales).
    sampling.inputs = "test"
    sampling.num_inputs = 8
    sampling.mask = "lower_half"
    sampling.superres_factor = 2
    sampling.sigma_y = 0.0
    sampling.conditional_method = "smc"
    sampling.particles = 64
    sampling.smc_steps = ml_collections.config_dict.placeholder(int)
    # Ours, class-conditional sampling (docs/guidance.md): the class of the samples (a class index, a list
    # 'a,b,...' spread evenly over the samples, or 'all' for every class; unset: unconditional), the
    # classifier-free guidance weight w of a class-conditional network, and for classifier guidance of an
    # unconditional one the noise-conditional classifier (its workdir or checkpoint, from --mode
    # train_classifier) and its scale.
    sampling.class_label = ml_collections.config_dict.placeholder(str)
    sampling.guidance = 0.0
    sampling.classifier = ml_collections.config_dict.placeholder(str)
    sampling.classifier_scale = 1.0

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.begin_ckpt = 9
    evaluate.end_ckpt = 26
    evaluate.batch_size = 1024
    evaluate.enable_sampling = False
    evaluate.num_samples = 50000
    # Ours: seconds to wait for each checkpoint of begin_ckpt..end_ckpt to appear, as beside a running
    # training job (the original waits for them); 0: evaluate those that exist, fail at once if none.
    evaluate.wait_s = 0.
    evaluate.enable_loss = True
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = "test"
    # Ours: bits/dim over only the split's first items (a quick estimate); unset: the whole split.
    evaluate.bpd_num_items = ml_collections.config_dict.placeholder(int)
    # Passes over those items, each with fresh dequantization noise. The original hard-codes 5 for the test
    # split (1 for train); ours is a knob, 1 by default: set 5 for the original's protocol.
    evaluate.bpd_num_repeats = 1
    # Ours: the likelihood's precision ('fp32', 'tf32', 'bf16') and a torch.compile mode for its network
    # (unset: eager); docs/performance.md says what each costs in bits/dim.
    # Ours: the DSM bound on bits/dim (score_sde/bound.py, docs/training.md), over the same items as bits/dim,
    # without an ODE solve; bound_num_times draws of t per item.
    evaluate.enable_bound = False
    evaluate.bound_num_times = 1
    evaluate.bpd_precision = "fp32"
    evaluate.bpd_compile = ml_collections.config_dict.placeholder(str)
    # Ours: sample quality (docs/evaluation.md). The feature network ('inception': the FID Inception; 'mnist':
    # our MNIST classifier), where its weights are, whether to download missing Inception weights, and the
    # reference statistics (`--mode stats` writes them; unset: <workdir>/stats/<dataset>_<size>_<features>_
    # <split>.npz) of the stats_split split, with the features themselves if stats_features (for KID).
    evaluate.features = "inception"
    evaluate.inception_weights = "~/.cache/score_sde/weights-inception-2015-12-05-6726825d.pth"
    evaluate.mnist_classifier = "~/.cache/score_sde/mnist_classifier.pth"
    evaluate.download = False
    evaluate.stats = ml_collections.config_dict.placeholder(str)
    evaluate.stats_split = "train"
    evaluate.stats_features = False

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "CIFAR10"
    data.image_size = 32
    data.random_flip = True
    data.centered = False
    data.uniform_dequantization = False
    data.num_channels = 3
    # Ours: where the datasets live (a string, '~' expanded by score_sde.data) and whether to fetch them.
    data.root = "~/.cache/score_sde/data"
    data.download = False
    # DataLoader worker processes; unset: 0 for datasets held in memory, else min(4, CPUs).
    data.num_workers = ml_collections.config_dict.placeholder(int)

    config.model = model = ml_collections.ConfigDict()
    # Ours: keep 4-D weights (and so activations) in channels_last memory format, often faster for
    # convolutions under bf16 on a GPU (docs/performance.md); the same outputs.
    model.channels_last = False
    # Ours: 'none' (the original's network conventions; its checkpoints) or 'edm' (the network as the F of
    # EDM's preconditioned denoiser, continuous time only), with the data's std sigma_data (also EDM's
    # loss weight).
    model.preconditioning = "none"
    model.sigma_data = 0.5
    model.sigma_min = 0.01
    model.sigma_max = 50.  # floats: a command-line override may then be fractional
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.
    model.dropout = 0.1
    model.embedding_type = "fourier"
    # Ours: the number of classes of a class-conditional network (ddpm, ncsnpp, mlp; docs/guidance.md); 0:
    # unconditional, the original's networks and checkpoints.
    model.num_classes = 0

    config.optim = optim = ml_collections.ConfigDict()
    optim.weight_decay = 0.
    optim.optimizer = "Adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 5000
    optim.grad_clip = 1.

    # Ours: the noise-conditional classifier of classifier guidance, trained by --mode train_classifier into
    # <workdir>/classifier/ on the data's labels, perturbed by training.sde's kernel: its width, steps, batch
    # size, learning rate (Adam, optim's other knobs, no warm-up) and EMA rate.
    config.classifier = classifier = ml_collections.ConfigDict()
    classifier.nf = 32
    classifier.n_iters = 5000
    classifier.batch_size = 128
    classifier.lr = 1e-3
    classifier.ema_rate = 0.999

    config.seed = 42
    return config
