# Makes `recipes` a package so that `tune run recipes/<name>.py` (which torchtune runs as the module
# `recipes.<name>`) finds these files rather than the `recipes` package shipped inside torchtune's
# wheel. The repo root must come before site-packages on sys.path: `make setup` writes a .pth file
# into the virtual environment for that (see README, "Why a .pth file").
# The wheel installs this folder as the package `tandem_recipes` (its configs inside it, for `tandem ls` /
# `tandem cp`): `from tandem_recipes.pretrain import PretrainRecipe` works without a clone.
