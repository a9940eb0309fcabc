"""Heart-rate estimation from wrist PPG, trained without and with differential privacy, over seeds.

`python -m pydp_r.demo` (what `make demo` runs) follows the R walkthrough "Differential Privacy
with TensorFlow": a PPG-DaLiA subject's wrist signals averaged to 2-s windows, sequences of 12
windows, a 1-D convnet, trained with Adam and with DP-Adam. Single runs are a lottery (the
test MAE of either model moves by several bpm from one seed to the next), so the demo trains
both models for every seed in `--seeds` and reports the mean and standard deviation.

Each seed gives a synthetic subject (`pydp_r.data.synthetic_ppg_subject(seed=...)`) and the
training seed (initial weights, batch order, DP noise). The first 4000 labels of the subject
are its training part, the rest its test part. The last 600 training sequences (in time, 11
sequences overlapping the boundary dropped) are the validation split: the models train on
the rest and the validation curves come from it, never from the test part. With `--data-dir`
(or `PPG_DALIA_DIR`) the real subject is used for every seed instead.

The recipes were tuned on the validation split of synthetic subjects with seeds 100-102,
disjoint from the default evaluation seeds 0-4; `--tune` reruns that search (normalization
and learning rate, the same grid size for both models) and trains the seeds with what it
picks. Tuning on private data would spend privacy too (Papernot & Steinke 2022); the
synthetic subjects stand in for public data here.

The private recipe: DP-Adam with the batch size that `pydp_r.planner.plan_dp_training` picks
for epsilon 2 at delta 1e-5 and the noise multiplier the PLD accountant calibrates for it,
Poisson-sampled batches (`pydp_r.data.poisson_batches`, so the Poisson-amplified epsilon is
the honest one), no normalization layer (BatchNormalization mixes examples; GroupNormalization,
its DP-safe stand-in, normalizes each sequence on its own and so removes the signal level
the heart rate is read from), a cosine learning-rate decay, and parameter averaging
(`pydp_r.averaging.ParameterAveraging`, free in privacy). Both models
see features scaled with the mean and standard deviation of a public synthetic subject (seed
999), not of the training subject (whose statistics would cost privacy), and start their
output at a public prior heart rate (90 bpm) instead of 0.

Writes `demo-output/` with the validation curves (a band of one standard deviation per
model), the numbers per seed as JSON, and with `--sweep` a privacy-utility curve. While it trains
it prints a line when each run starts and ends and one per quarter of its epochs (`--verbose`:
every epoch).

Membership inference attacks the training sequences with non-members that are i.i.d. with them:
10 random blocks of 40 consecutive training sequences are held out of training (of each, the
28 sequences that share a window with a training sequence are dropped, 180 non-members remain).
The later test part would not do: its drift reads as membership.

`--privacy-unit user` is the per-wearer demo (`pydp_r.demo.user_level`): user-level DP-SGD on
a synthetic population of 2000 training wearers per seed (`population.population_arrays`),
tested on 400 wearers held out of training, with epsilon per wearer from the optimizer's
privacy ledger and a wearer-level membership attack against the held-out wearers.

The app in stages, each a function to call on its own: the command line (`cli.parse_args` ->
`DemoOptions`), the data (`data.prepare_data`), the recipes (`tuning.choose_recipes`, which tunes
with `--tune`), the runs (`runs.run_recipes`, one `runs.train` per recipe and seed) and the report
(`report.report`: the table, the notes, results.json and the plots). `cli.run_demo` chains them.
"""

from pydp_r.demo.cli import DemoOptions, main, parse_args, run_demo
from pydp_r.demo.data import (
    NON_MEMBER_BLOCK_SEQUENCES,
    NON_MEMBER_BLOCKS,
    PUBLIC_REFERENCE_SEED,
    VALIDATION_SEQUENCES,
    WINDOWS_PER_SEQUENCE,
    DemoData,
    load_subject,
    prepare_data,
    prepared_arrays,
    public_feature_scaling,
    split_non_members,
    split_validation,
    training_mean_baseline,
)
from pydp_r.demo.population import PopulationArrays, population_arrays
from pydp_r.demo.recipes import (
    ACCOUNTANT,
    DEFAULT_SEEDS,
    DELTA,
    NON_PRIVATE_GRID,
    PRIOR_HEART_RATE_BPM,
    PRIVATE_GRID,
    TARGET_EPSILON,
    TUNING_SEEDS,
    Recipe,
    Recipes,
    non_private_recipe,
    private_recipe,
)
from pydp_r.demo.report import mean_and_sd, plot_histories, plot_sweep, report, window_level_epsilon
from pydp_r.demo.runs import (
    EpochGroupProgress,
    RunResult,
    Runs,
    privacy_record,
    run_recipes,
    run_seeds,
    train,
    walkthrough_convnet,
)
from pydp_r.demo.tuning import choose_recipes, tune
from pydp_r.demo.user_level import (
    UserRecipes,
    calibrate_user_noise,
    private_user_recipe,
    run_user_demo,
    train_users,
    user_membership_inference,
)

__all__ = [
    "ACCOUNTANT",
    "DEFAULT_SEEDS",
    "DELTA",
    "NON_MEMBER_BLOCKS",
    "NON_MEMBER_BLOCK_SEQUENCES",
    "NON_PRIVATE_GRID",
    "PRIOR_HEART_RATE_BPM",
    "PRIVATE_GRID",
    "PUBLIC_REFERENCE_SEED",
    "TARGET_EPSILON",
    "TUNING_SEEDS",
    "VALIDATION_SEQUENCES",
    "WINDOWS_PER_SEQUENCE",
    "DemoData",
    "DemoOptions",
    "EpochGroupProgress",
    "PopulationArrays",
    "Recipe",
    "Recipes",
    "RunResult",
    "Runs",
    "UserRecipes",
    "calibrate_user_noise",
    "choose_recipes",
    "load_subject",
    "main",
    "mean_and_sd",
    "non_private_recipe",
    "parse_args",
    "plot_histories",
    "plot_sweep",
    "population_arrays",
    "prepare_data",
    "prepared_arrays",
    "privacy_record",
    "private_recipe",
    "private_user_recipe",
    "public_feature_scaling",
    "report",
    "run_demo",
    "run_recipes",
    "run_seeds",
    "run_user_demo",
    "split_non_members",
    "split_validation",
    "train",
    "train_users",
    "training_mean_baseline",
    "tune",
    "user_membership_inference",
    "walkthrough_convnet",
    "window_level_epsilon",
]
