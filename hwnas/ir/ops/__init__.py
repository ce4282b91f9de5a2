"""Registry entries, one module per op family. Importing this package registers them."""

from hwnas.ir.ops import elementwise, nn, recurrent, reduce, tensor  # noqa: F401
