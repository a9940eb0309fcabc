# A stand-in source tree for the distribution pydp-r whose build needs nothing
# from an index: an in-tree PEP 517 backend writes the wheel with the standard
# library, so install_pydpr() can run end to end offline.
fake_source_tree <- function() {
  dir <- tempfile("pydp-r-source-")
  dir.create(dir)
  writeLines(c(
    "[build-system]",
    "requires = []",
    "build-backend = \"offline_backend\"",
    "backend-path = [\".\"]",
    "",
    "[project]",
    "name = \"pydp-r\"",
    "version = \"0.0.1\""
  ), file.path(dir, "pyproject.toml"))
  writeLines(c(
    "import base64, hashlib, os, zipfile",
    "",
    "DIST_INFO = 'pydp_r-0.0.1.dist-info'",
    "FILES = {",
    "    'pydp_r/__init__.py': 'INSTALLED_BY_TEST = True\\n',",
    "    DIST_INFO + '/METADATA': 'Metadata-Version: 2.1\\nName: pydp-r\\nVersion: 0.0.1\\n',",
    "    DIST_INFO + '/WHEEL': 'Wheel-Version: 1.0\\nGenerator: pydpr-test\\n'",
    "    'Root-Is-Purelib: true\\nTag: py3-none-any\\n',",
    "}",
    "",
    "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):",
    "    name = 'pydp_r-0.0.1-py3-none-any.whl'",
    "    record = []",
    "    with zipfile.ZipFile(os.path.join(wheel_directory, name), 'w') as wheel:",
    "        for path, text in FILES.items():",
    "            data = text.encode()",
    "            digest = hashlib.sha256(data).digest()",
    "            encoded = base64.urlsafe_b64encode(digest).rstrip(b'=').decode()",
    "            wheel.writestr(path, data)",
    "            record.append(f'{path},sha256={encoded},{len(data)}')",
    "        record.append(DIST_INFO + '/RECORD,,')",
    "        wheel.writestr(DIST_INFO + '/RECORD', '\\n'.join(record) + '\\n')",
    "    return name"
  ), file.path(dir, "offline_backend.py"))
  dir
}

test_that("bad install arguments fail in R, naming the argument", {
  source <- fake_source_tree()
  on.exit(unlink(source, recursive = TRUE))
  expect_error(install_pydpr(envname = "", source = source), "`envname`")
  expect_error(install_pydpr(source = 42), "`source` must be a single")
  expect_error(install_pydpr(source = tempdir()),
               "`source` must be the pydp_r source tree")
  expect_error(install_pydpr(source = source, python = NA_character_), "`python`")
  expect_error(install_pydpr(source = source, pip_options = NA_character_),
               "`pip_options`")
})

test_that("the source tree is recognised by its pyproject.toml", {
  source <- fake_source_tree()
  other <- tempfile("other-project-")
  dir.create(other)
  on.exit(unlink(c(source, other), recursive = TRUE))
  writeLines(c("[project]", "name = \"pydp-r-fork\""),
             file.path(other, "pyproject.toml"))
  expect_true(pydpr:::is_pydp_r_source(source))
  expect_false(pydpr:::is_pydp_r_source(other))
  expect_false(pydpr:::is_pydp_r_source(tempfile()))
  expect_identical(pydpr:::resolve_source(source), normalizePath(source))
})

test_that("without `source`, the folder the package came from is used, else `source` is required", {
  source <- fake_source_tree()
  on.exit(unlink(source, recursive = TRUE))
  expect_identical(
    pydpr:::resolve_source(NULL, candidates = c(tempdir(), source)),
    normalizePath(source)
  )
  expect_error(pydpr:::resolve_source(NULL, candidates = tempdir()),
               "`source` is required", class = "pydpr_argument_error")
  # Whatever this installation recorded is either unknown or a real source tree.
  for (candidate in Filter(pydpr:::is_pydp_r_source, pydpr:::source_candidates())) {
    expect_true(file.exists(file.path(candidate, "DESCRIPTION")))
  }
})

test_that("install_pydpr() installs the source tree into a new virtualenv", {
  skip_if_no_core()
  source <- fake_source_tree()
  envname <- tempfile("pydpr-env-")
  # reticulate warns about installing under R CMD check; this installs only a
  # stand-in package, offline, into a temporary environment.
  allow <- "_RETICULATE_I_KNOW_WHAT_IM_DOING_"
  was <- Sys.getenv(allow, unset = NA)
  Sys.setenv("_RETICULATE_I_KNOW_WHAT_IM_DOING_" = "true")
  on.exit({
    if (is.na(was)) {
      Sys.unsetenv(allow)
    } else {
      do.call(Sys.setenv, stats::setNames(list(was), allow))
    }
    unlink(c(source, envname), recursive = TRUE)
  })
  capture.output(
    expect_message(
      env_python <- install_pydpr(
        envname = envname, source = source,
        python = reticulate::py_config()$python,
        pip_options = c("--no-index", "--quiet"),
        packages = FALSE  # to virtualenv_create(): no upgrades from an index
      ),
      "reticulate::use_virtualenv"
    )
  )
  expect_true(file.exists(env_python))
  probe <- system2(
    env_python,
    c("-c", shQuote("import pydp_r, sys; print(pydp_r.INSTALLED_BY_TEST); print(sys.prefix)")),
    stdout = TRUE
  )
  expect_identical(probe[[1]], "True")
  expect_identical(normalizePath(probe[[2]]), normalizePath(envname))
})
