"""Compiler flags shared by every lwkt target (Abseil's configure_copts.bzl, as plain lists)."""

# Our own code: warnings on and fatal. System headers are not affected (-isystem).
LWKT_COPTS = [
    # The targets carry their language standard, so an embedder's build needs no flag for
    # lwkt's own sources (code that includes lwkt headers must be C++20 too: README).
    "-std=c++20",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-missing-field-initializers",
    # Probe the stack as frames grow, so a large frame cannot step over a thread's guard
    # region (Runtime::Options::guard_size) into the neighbouring mapping. Accepted by gcc
    # for x86-64 and AArch64 (the cross compiler); users should build their code with it too.
    "-fstack-clash-protection",
]

# Tests and benchmarks: the same, minus warnings that gtest/benchmark macros trip.
LWKT_TEST_COPTS = LWKT_COPTS + [
    "-Wno-sign-compare",
]
