/* Ends one variant's vector operations (hydra_kernels.h). */
#undef HV_T
#undef HV_VECS
#undef HV_LANES
#undef HV_SET1
#undef HV_LOAD
#undef HV_STORE
#undef HV_ADD
#undef HV_SRLI32
#undef HV_XOR
#undef HV_SRLI
#undef HV_MUL
#undef HV_HI
#undef HV_XOR3
