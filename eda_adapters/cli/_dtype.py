"""The `--dtype` choices every command that loads a target offers."""

DTYPE_CHOICES = ("machine", "auto", "float32", "bfloat16", "float16")
DTYPE_HELP = (
    "dtype to compute in: machine (default) = bfloat16 where this machine multiplies it faster (probed once, cached), "
    "float32 elsewhere; auto = the checkpoint's dtype."
)
