"""Compiler flags shared by every lwkt target (Abseil's configure_copts.bzl, as plain lists)."""

# Our own code: warnings on and fatal. System headers are not affected (-isystem).
LWKT_COPTS = [
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-missing-field-initializers",
]

# Tests and benchmarks: the same, minus warnings that gtest/benchmark macros trip.
LWKT_TEST_COPTS = LWKT_COPTS + [
    "-Wno-sign-compare",
]
