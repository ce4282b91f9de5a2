"""The C99 backend: int8 kernels in portable C, a static memory plan, and a build harness."""
