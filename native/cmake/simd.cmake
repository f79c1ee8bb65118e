# SIMD variants of the CPU kernels: each variant is one source file built with
# its own instruction-set flags, and the backend picks one at run time from the
# CPU's features (src/cpu/backend.cc). Never -march=native: the library must
# run on any x86-64, and a test or bench can force each variant it can run.
# Other CPUs (arm64, ...) build only the portable scalar path; the x86 files
# then compile to stubs that report "not built".
set(TS_CPU_DIR ${CMAKE_CURRENT_SOURCE_DIR}/src/cpu)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$" AND NOT MSVC)
  set_source_files_properties(${TS_CPU_DIR}/kernels_avx2.cc PROPERTIES
    COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  set_source_files_properties(${TS_CPU_DIR}/kernels_avx512.cc PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx2;-mfma;-mf16c")
  message(STATUS "turbosparse: CPU kernels scalar + avx2 + avx512 (chosen at run time)")
else()
  message(STATUS "turbosparse: CPU kernels scalar only (${CMAKE_SYSTEM_PROCESSOR})")
endif()
