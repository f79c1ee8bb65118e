# Cross build for 64-bit Arm Linux with Debian's gcc cross toolchain
# (apt-get install g++-aarch64-linux-gnu; qemu-user runs the result):
#   cmake -S native -B /tmp/build-arm64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=$PWD/native/cmake/aarch64-linux-gnu.cmake \
#         -DTS_WITH_CUDA=OFF -DTS_BUILD_ADDON=OFF
#   ninja -C /tmp/build-arm64 test_kernels
#   qemu-aarch64 -L /usr/aarch64-linux-gnu /tmp/build-arm64/test_kernels ../shared/golden/tiny-a
# Only the portable scalar kernels are built there (cmake/simd.cmake); test/native/arm64.test.ts does this.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
