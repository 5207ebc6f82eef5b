"""lwkt_deps(): everything lwkt needs in a WORKSPACE, for lwkt itself and for embedders.

An embedding WORKSPACE needs three lines (README, "Embed it in your server"):

    local_repository(name = "lwkt", path = "/path/to/lwkt")
    load("@lwkt//:deps.bzl", "lwkt_deps")
    lwkt_deps()

It declares, each only when the WORKSPACE has not declared a repository of that name already:
  - rules_cc, rules_java, remote_coverage_tools: repositories Bazel 4 refers to implicitly
    (cc rules, test coverage). Offline, they are tiny shims kept in lwkt's third_party/;
    an embedder that has the real ones declares them first and these are skipped.
  - platforms: Debian's copy under /usr/share/bazel/platforms (bazel-bootstrap).
  - lwkt_system: Debian's -dev packages under /usr as link-only cc_library targets
    (third_party/system.BUILD: hwloc, uring, absl, gtest, gmock, benchmark, boost). The name
    is lwkt's own so that it cannot clash with an embedder's `system` repository.
"""

def _lwkt_shim_impl(rctx):
    # The shim folder beside third_party/BUILD in whichever repository holds this file
    # (the main repository when lwkt builds itself, @lwkt when embedded), linked file by file.
    src = rctx.path(Label("//third_party:BUILD")).dirname.get_child(rctx.attr.folder)
    for child in src.readdir():
        rctx.symlink(child, child.basename)

_lwkt_shim = repository_rule(
    implementation = _lwkt_shim_impl,
    attrs = {"folder": attr.string(mandatory = True)},
    local = True,
)

def _declare(name, rule, **kwargs):
    if native.existing_rule(name) == None:
        rule(name = name, **kwargs)

def lwkt_deps():
    """Declares the repositories lwkt's targets need (see the file's header)."""
    for shim in ["rules_cc", "rules_java", "remote_coverage_tools"]:
        _declare(shim, _lwkt_shim, folder = shim)
    _declare("platforms", native.local_repository, path = "/usr/share/bazel/platforms")
    _declare(
        "lwkt_system",
        native.new_local_repository,
        path = "/usr",
        build_file = str(Label("//third_party:system.BUILD")),
    )
