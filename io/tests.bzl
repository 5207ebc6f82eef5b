"""io_backend_test: one cc_test per I/O backend (the io_uring run, and <name>_epoll)."""

load("//:copts.bzl", "LWKT_TEST_COPTS")

def io_backend_test(name, srcs, size = "medium", tags = []):
    """Declares `name` (io_uring; it skips, saying so, where there is none) and
    `name`_epoll (LWKT_IO_TEST_BACKEND=epoll), both from the same sources."""
    for suffix, env in [("", {}), ("_epoll", {"LWKT_IO_TEST_BACKEND": "epoll"})]:
        native.cc_test(
            name = name + suffix,
            size = size,
            srcs = srcs + ["test_util.h"],
            copts = LWKT_TEST_COPTS,
            env = env,
            tags = tags,
            deps = [
                ":io",
                "//lwkt",
                "//lwkt:testing",
                "@lwkt_system//:absl",
                "@lwkt_system//:gtest_main",
            ],
        )
