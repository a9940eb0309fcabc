# The R walkthrough "Differential Privacy with TensorFlow" (RStudio AI Blog, 2019), step by
# step, on Keras 3 with pydpr instead of TensorFlow Privacy on TensorFlow 1.
#
# Every change from the 2019 code is marked "EDIT (n):" with the reason. There are five kinds:
#   (1) library calls: pydpr and Keras' Python API through reticulate in place of the keras,
#       tfdatasets and tensorflow_privacy packages (their verbs map one to one, below);
#   (2) no TensorFlow 1 workarounds: no disable_v2_behavior(), no dataset_repeat(), no
#       steps_per_epoch / validation_steps;
#   (3) the optimizer: optimizer_dp_adam() for DPAdamGaussianOptimizer, with the same
#       arguments, and an ordinary "mse" loss;
#   (4) BatchNormalization replaced by replace_batch_norm() for the private model;
#   (5) the epsilon calculator: pydpr's compute_dp_sgd_privacy() for TF Privacy's script.
#
# Runs offline on a synthetic subject the size of S1; set PPG_DALIA_DIR to the folder with
# PPG_FieldStudy's S1.pkl (or S1/S1.pkl) for the real data. Epochs: WALKTHROUGH_EPOCHS (the
# post's 20 by default), or the first command-line argument:
#   Rscript examples/walkthrough.R 2
# Needs a reticulate that converts R arrays to the installed NumPy (see ?install_pydpr).

# EDIT (1): library(tensorflow), library(keras), library(tfdatasets) and
# privacy <- import("tensorflow_privacy") become pydpr plus Keras 3 and TensorFlow through
# reticulate. (keras3 for R has the post's verbs for Keras 3; it is not a Debian package, so
# this script uses the Python API they wrap: layer_conv_1d() is keras$layers$Conv1D(),
# zip_datasets() is tf$data$Dataset$zip(), dataset_batch() is $batch(), and so on.)
# EDIT (2): no tf$compat$v1$disable_v2_behavior(): pydpr's optimizers run in TensorFlow 2.
library(pydpr)
library(magrittr)
keras <- reticulate::import("keras")
tf <- reticulate::import("tensorflow")
args <- commandArgs(trailingOnly = TRUE)
num_epochs <- as.integer(if (length(args) > 0) args[[1]] else
  Sys.getenv("WALKTHROUGH_EPOCHS", "20"))
keras$utils$set_random_seed(777L)

# The data: subject S1 of PPG-DaLiA.
data_dir <- Sys.getenv("PPG_DALIA_DIR")
s1 <- if (nzchar(data_dir)) {
  # EDIT (1): py_load_object("PPG_FieldStudy/S1/S1.pkl", encoding = "latin1") is
  # load_ppg_dalia_subject(), which also reads the file's Python 2 encoding.
  candidates <- file.path(data_dir, c("S1.pkl", "S1/S1.pkl", "PPG_FieldStudy/S1/S1.pkl"))
  load_ppg_dalia_subject(candidates[file.exists(candidates)][[1]])
} else {
  synthetic_ppg_subject(include_chest = FALSE) # offline stand-in, S1's size and layout
}

### predictors ###
s1$signal$wrist$ACC %>% nrow() # 294784 (32 Hz, x, y, z)
s1$signal$wrist$BVP %>% nrow() # 589568 (64 Hz)
s1$signal$wrist$EDA %>% nrow() # 36848 (4 Hz)
s1$signal$wrist$TEMP %>% nrow() # 36848 (4 Hz)
### target ###
s1$label %>% matrix() %>% nrow() # 4603 (0.5 Hz)

# Preprocessing pipeline.
# EDIT (1): the post defines average_and_make_sequences() with tfdatasets' dataset_window();
# pydpr ships the same function (2-s means, then all windows of num_timesteps, shift 1).

label <- s1$label %>% matrix() # 4603 observations, each spanning 2 secs
n_total <- 4603 # keep track of this

# keep matching numbers of observations of predictors
acc <- s1$signal$wrist$ACC[1:(n_total * 64), ] # 32 Hz, 3 columns
bvp <- s1$signal$wrist$BVP[1:(n_total * 128)] %>% matrix() # 64 Hz
eda <- s1$signal$wrist$EDA[1:(n_total * 8)] %>% matrix() # 4 Hz
temp <- s1$signal$wrist$TEMP[1:(n_total * 8)] %>% matrix() # 4 Hz

# number of timesteps used in the second dimension
num_timesteps <- 12
# number of observations to be used for the training set
train_max <- 4000
# also keep track of actual number of training and test observations
n_train <- train_max - num_timesteps + 1
n_test <- n_total - train_max - num_timesteps + 1

acc_train <-
  average_and_make_sequences(acc[1:(train_max * 64), ], 64, num_timesteps)
bvp_train <-
  average_and_make_sequences(bvp[1:(train_max * 128), , drop = FALSE], 128, num_timesteps)
eda_train <-
  average_and_make_sequences(eda[1:(train_max * 8), , drop = FALSE], 8, num_timesteps)
temp_train <-
  average_and_make_sequences(temp[1:(train_max * 8), , drop = FALSE], 8, num_timesteps)

acc_test <-
  average_and_make_sequences(acc[(train_max * 64 + 1):nrow(acc), ], 64, num_timesteps)
bvp_test <-
  average_and_make_sequences(bvp[(train_max * 128 + 1):nrow(bvp), , drop = FALSE], 128,
                             num_timesteps)
eda_test <-
  average_and_make_sequences(eda[(train_max * 8 + 1):nrow(eda), , drop = FALSE], 8,
                             num_timesteps)
temp_test <-
  average_and_make_sequences(temp[(train_max * 8 + 1):nrow(temp), , drop = FALSE], 8,
                             num_timesteps)

# all predictors
# EDIT (1): zip_datasets(...) %>% dataset_map(function(...) tf$concat(list(...), axis = 1L))
concat_features <- function(...) tf$concat(list(...), axis = 1L)
x_train <- tf$data$Dataset$zip(reticulate::tuple(acc_train, bvp_train, eda_train, temp_train))$
  map(concat_features)
x_test <- tf$data$Dataset$zip(reticulate::tuple(acc_test, bvp_test, eda_test, temp_test))$
  map(concat_features)

# the first num_timesteps - 1 labels of each part have no complete sequence
# EDIT (1): tensor_slices_dataset(... %>% k_cast("float32")) is
# tf$data$Dataset$from_tensor_slices(tf$cast(..., "float32")).
y_train <- tf$data$Dataset$from_tensor_slices(
  tf$cast(label[num_timesteps:train_max, , drop = FALSE], "float32")
)
y_test <- tf$data$Dataset$from_tensor_slices(
  tf$cast(label[(train_max + num_timesteps):nrow(label), , drop = FALSE], "float32")
)

ds_train <- tf$data$Dataset$zip(reticulate::tuple(x_train, y_train))
ds_test <- tf$data$Dataset$zip(reticulate::tuple(x_test, y_test))

# The post's sequence counts: 3989 for training and 592 for test.
sequences <- function(dataset) {
  dataset$reduce(tf$constant(0L), function(count, x, y) tf$add(count, 1L))$numpy()
}
cat("training sequences:", sequences(ds_train), "of n_train =", n_train, "\n")
cat("test sequences:", sequences(ds_test), "of n_test =", n_test, "\n")
stopifnot(sequences(ds_train) == n_train, sequences(ds_test) == n_test)
str(x_train$element_spec$shape$as_list()) # 12 timesteps x 6 features

batch_size <- 32
# EDIT (1): dataset_shuffle(n_train) %>% dataset_batch(...) are the methods $shuffle()
# and $batch(). EDIT (2): no dataset_repeat() (needed only without eager execution).
ds_train <- ds_train$
  shuffle(as.integer(n_train))$
  batch(as.integer(batch_size), drop_remainder = TRUE)
ds_test <- ds_test$
  batch(as.integer(batch_size))

# The model, the same for both runs.
# EDIT (1): keras_model_sequential() %>% layer_conv_1d(...) %>% ... is keras$Sequential()
# with the same layers and arguments (whole numbers as integers, 32L, which keras3 converts).
define_model <- function() {
  keras$Sequential(list(
    keras$layers$Conv1D(filters = 32L, kernel_size = 3L, activation = "relu"),
    keras$layers$BatchNormalization(),
    keras$layers$Conv1D(filters = 64L, kernel_size = 5L, activation = "relu"),
    keras$layers$BatchNormalization(),
    keras$layers$Conv1D(filters = 128L, kernel_size = 5L, activation = "relu"),
    keras$layers$BatchNormalization(),
    keras$layers$GlobalAveragePooling1D(),
    keras$layers$Dense(units = 128L, activation = "relu"),
    keras$layers$Dense(units = 1L)
  ))
}
model <- define_model()

optimizer <- keras$optimizers$Adam() # optimizer_adam()
model$compile(loss = "mse", optimizer = optimizer, metrics = list("mean_absolute_error"))

# EDIT (2): no steps_per_epoch = n_train / batch_size or validation_steps (Keras 3 ends an
# epoch where the dataset ends; 3989 / 32 is not even a whole number).
history <- model$fit(
  ds_train,
  validation_data = ds_test,
  epochs = num_epochs,
  verbose = 2L
)
baseline_mae <- tail(unlist(history$history$val_mean_absolute_error), 1)

# DP training: swap the optimizer.
l2_norm_clip <- 1
noise_multiplier <- 1.1
# EDIT (3): num_microbatches <- k_cast(batch_size, "int32") is a plain number; pydpr turns
# whole numbers into integers where Python needs them.
num_microbatches <- batch_size
learning_rate <- 0.01

# EDIT (3): privacy$DPAdamGaussianOptimizer(...) is optimizer_dp_adam(...), same arguments.
optimizer <- optimizer_dp_adam(
  l2_norm_clip = l2_norm_clip,
  noise_multiplier = noise_multiplier,
  num_microbatches = num_microbatches,
  learning_rate = learning_rate
)

# EDIT (4): BatchNormalization normalizes each example with its whole batch, so one
# example's data reaches every other example's gradient and per-example clipping bounds
# nothing; pydpr's optimizers refuse it. replace_batch_norm() swaps in GroupNormalization,
# which works within each example.
model <- define_model() %>% replace_batch_norm()

# EDIT (3): the loss is plain "mse": TF Privacy 1 needed per-example losses
# (tf$keras$losses$MeanSquaredError(reduction = tf$keras$losses$Reduction$NONE));
# pydpr computes per-example gradients itself.
model$compile(loss = "mse", optimizer = optimizer, metrics = list("mean_absolute_error"))

history <- model$fit(
  ds_train,
  validation_data = ds_test,
  epochs = num_epochs,
  verbose = 2L
)
private_mae <- tail(unlist(history$history$val_mean_absolute_error), 1)

# EDIT (5): compute_priv <- import("tensorflow_privacy.privacy.analysis.compute_dp_sgd_privacy")
# and compute_priv$compute_dp_sgd_privacy(...) are pydpr's compute_dp_sgd_privacy(), the same
# calculation (RDP accountant, TF Privacy's orders); it returns epsilon and the optimal order.
compute_dp_sgd_privacy(
  n = n_train,
  batch_size = batch_size,
  noise_multiplier = noise_multiplier,
  epochs = num_epochs,
  delta = 1e-5
)
# and for the post's 50 epochs
compute_dp_sgd_privacy(
  n = n_train,
  batch_size = batch_size,
  noise_multiplier = noise_multiplier,
  epochs = 50,
  delta = 1e-5
)

cat(sprintf("test MAE after %d epochs: non-private %.2f bpm, DP %.2f bpm\n", num_epochs,
            baseline_mae, private_mae))
