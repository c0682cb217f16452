# Included by pi.pyx and mandelbrot.pyx: the instruction-set variants of kernels/hydra_kernels.h, as
# each module reports them, and the lookup of a variant by name.

cdef extern from "hydra_kernels.h" nogil:
    int HYDRA_NVARIANTS
    const char* hydra_variant_names[]
    int hydra_variant_compiled(int v)
    int hydra_variant_supported(int v)
    int hydra_best_variant()

#: Instruction-set variants compiled into this module, widest last ("baseline" is always there).
VARIANTS = tuple(hydra_variant_names[v].decode() for v in range(HYDRA_NVARIANTS) if hydra_variant_compiled(v))
#: Those this CPU (and OS) can run.
SUPPORTED = tuple(hydra_variant_names[v].decode() for v in range(HYDRA_NVARIANTS) if hydra_variant_supported(v))
#: The widest supported variant, what hydra_tasks.compute uses unless told otherwise.
BEST = hydra_variant_names[hydra_best_variant()].decode()


cdef int _variant(str name) except -1:
    """The index of variant ``name``; ValueError if unknown or if this CPU cannot run it."""
    cdef int v
    for v in range(HYDRA_NVARIANTS):
        if hydra_variant_names[v].decode() == name:
            if not hydra_variant_supported(v):
                raise ValueError(f"kernel variant {name!r} is not compiled in or this CPU cannot run it")
            return v
    raise ValueError(f"unknown kernel variant {name!r}")
