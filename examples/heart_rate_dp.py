"""Differential privacy with Keras 3: heart rate from wrist PPG, step by step.

The Python version of the R walkthrough "Differential Privacy with TensorFlow": train a 1-D
convnet to estimate heart rate from a wrist device's signals (PPG-DaLiA, subject S1), first
as usual, then with a DP optimizer, and ask what privacy that bought.

    python examples/heart_rate_dp.py                 # bundled synthetic subject
    python examples/heart_rate_dp.py /path/to/S1.pkl # the real subject, if you have it
    python examples/heart_rate_dp.py --epochs 3      # quicker

`python -m pydp_r.demo` runs the same comparison with plots and a noise sweep.
"""

import argparse

import keras

import pydp_r
import pydp_r.planner
from pydp_r import data
from pydp_r.averaging import ParameterAveraging

parser = argparse.ArgumentParser()
parser.add_argument("subject_pickle", nargs="?", help="PPG-DaLiA S1.pkl (default: synthetic)")
parser.add_argument("--epochs", type=int, default=20)
args = parser.parse_args()

# 1. Data. The wrist sensors run at 32 Hz (accelerometer), 64 Hz (PPG) and 4 Hz (EDA,
#    temperature); the label is the heart rate from the ECG every 2 s. Each signal is averaged
#    over 2 s windows, and 12 consecutive windows form one input sequence labelled with the
#    heart rate of its last window. The first 4000 labels train, the rest test.
if args.subject_pickle:
    subject = data.load_ppg_dalia_subject(args.subject_pickle)
else:
    subject = data.synthetic_ppg_subject(seed=0)  # same layout as S1.pkl, generated offline
batch_size = 32
ds_train, ds_test = data.heart_rate_datasets(
    subject, train_max=4000, num_timesteps=12, batch_size=batch_size, seed=0, drop_remainder=True
)
n_train = len(data.heart_rate_arrays(subject)[0])  # 3989 sequences for S1


# 2. The walkthrough's model: three convolutions with batch normalization, pooled over time.
def make_model() -> keras.Model:
    model = keras.Sequential([keras.Input((12, 6))])
    for filters, kernel_size in ((32, 3), (64, 5), (128, 5)):
        model.add(keras.layers.Conv1D(filters, kernel_size, activation="relu"))
        model.add(keras.layers.BatchNormalization())
    model.add(keras.layers.GlobalAveragePooling1D())
    model.add(keras.layers.Dense(128, activation="relu"))
    model.add(keras.layers.Dense(1))
    return model


# 3. Non-private baseline.
keras.utils.set_random_seed(0)
model = make_model()
model.compile(optimizer=keras.optimizers.Adam(), loss="mse", metrics=["mae"])
model.fit(ds_train, validation_data=ds_test, epochs=args.epochs, verbose=2)
print("non-private test MAE (bpm):", model.evaluate(ds_test, verbose=0)[1])

# 4. Private: swap the optimizer. Each example's gradient is clipped to norm 1.0 and Gaussian
#    noise is added to their sum. BatchNormalization mixes the examples of a batch (each is
#    normalized with the others' statistics), so one example would reach every gradient;
#    replace_batch_norm swaps in GroupNormalization, which works within one example.
#    The planner picks the batch size and calibrates the noise for epsilon 2 at delta 1e-5:
#    large batches with calibrated noise make each step less noisy (De et al. 2022).
x_train, y_train, _, _ = data.heart_rate_arrays(subject)
plan = pydp_r.planner.plan_dp_training(n_train, target_epsilon=2.0, epochs=args.epochs, delta=1e-5)
print(plan)
#    Poisson-sampled batches are what the accountant's (amplified) epsilon assumes.
ds_poisson = data.poisson_batches((x_train, y_train), plan.sampling_rate, seed=0)
keras.utils.set_random_seed(0)
private_model = pydp_r.replace_batch_norm(make_model())
#    Start the output at a public prior (90 bpm) instead of climbing there from 0 with noisy
#    steps; decay the learning rate along a cosine, so the noisy last steps are small.
private_model.layers[-1].bias.assign([90.0])
schedule = keras.optimizers.schedules.CosineDecay(
    0.01, decay_steps=args.epochs * (n_train // plan.batch_size), alpha=0.01
)
private_model.compile(
    optimizer=pydp_r.DPAdam(
        l2_norm_clip=1.0, noise_multiplier=plan.noise_multiplier, learning_rate=schedule
    ),
    loss="mse",
    metrics=["mae"],
)
budget = pydp_r.PrivacyBudget(delta=1e-5)  # measures what fit() ran and logs epsilon
#    Parameter averaging (an EMA of the weights) is post-processing of the private iterates:
#    it costs no privacy. The model ends with the averaged weights.
averaging = ParameterAveraging(decay=0.99)
private_model.fit(
    ds_poisson, validation_data=ds_test, epochs=args.epochs, callbacks=[budget, averaging],
    verbose=2,
)  # fmt: skip
print("private test MAE (bpm):", private_model.evaluate(ds_test, verbose=0)[1])

# 5. What privacy did that buy? (epsilon, delta)-DP for each training sequence; a 2-s window
#    lies in up to 12 sequences, so its guarantee (group privacy) is weaker.
print(
    pydp_r.privacy_statement(
        n=n_train,
        batch_size=plan.batch_size,
        noise_multiplier=plan.noise_multiplier,
        epochs=args.epochs,
        delta=1e-5,
        max_examples_per_user=12,
    )
)
