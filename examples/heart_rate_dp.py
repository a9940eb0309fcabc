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
from pydp_r import data

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
#    noise of std 1.1 * 1.0 is added to their sum. BatchNormalization mixes the examples of a
#    batch (each is normalized with the others' statistics), so one example would reach every
#    gradient; replace_batch_norm swaps in GroupNormalization, which works within one example.
keras.utils.set_random_seed(0)
private_model = pydp_r.replace_batch_norm(make_model())
private_model.compile(
    optimizer=pydp_r.DPAdam(l2_norm_clip=1.0, noise_multiplier=1.1, learning_rate=0.01),
    loss="mse",
    metrics=["mae"],
)
budget = pydp_r.PrivacyBudget(n=n_train, batch_size=batch_size, delta=1e-5)  # logs epsilon
private_model.fit(
    ds_train, validation_data=ds_test, epochs=args.epochs, callbacks=[budget], verbose=2
)
print("private test MAE (bpm):", private_model.evaluate(ds_test, verbose=0)[1])

# 5. What privacy did that buy? (epsilon, delta)-DP for each training sequence.
print(
    pydp_r.privacy_statement(
        n=n_train, batch_size=batch_size, noise_multiplier=1.1, epochs=args.epochs, delta=1e-5
    )
)
