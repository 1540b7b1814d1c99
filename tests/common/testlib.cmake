# SPDX-License-Identifier: Apache-2.0
# vdisk_testlib: the header-only helpers in tests/common that the test suites (tests/) and the libFuzzer
# targets (fuzz/) share. Included from both, since a fuzz build configures no tests and a test build no
# fuzz targets.
include_guard(GLOBAL)
add_library(vdisk_testlib INTERFACE)
target_include_directories(vdisk_testlib INTERFACE ${CMAKE_CURRENT_LIST_DIR} ${PROJECT_SOURCE_DIR}/lib ${VDISK_GENERATED_DIR})
target_link_libraries(vdisk_testlib INTERFACE vdisk_core)
