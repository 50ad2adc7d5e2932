"""Plugins: a third party's package is discovered, and a broken or greedy one breaks nothing else.

Third-party plugins arrive here the way they do on a user's machine: an installed
distribution (a `*.dist-info` folder with METADATA and entry_points.txt) that
registers an entry point in the group `ferbench`, on `sys.path`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

from ferbench import Method, View, hookimpl, plugins
from ferbench.cli import cli
from ferbench.datasets import DatasetAdapter
from ferbench.errors import ConfigError
from ferbench.hookspecs import hookspec
from ferbench.plugins import ENTRY_POINT_GROUP, build_registry, describe
from ferbench.protocols import Protocol

REPO = Path(__file__).resolve().parents[1]
BUILTIN_METHODS = {"baseline"}
BUILTIN_DATASETS = {"synthfer", "fer2013", "ferplus", "ckplus", "rafdb", "affectnet", "jaffe",
                    "imagefolder"}
BUILTIN_PROTOCOLS = {"clean", "noise", "noise_file", "cross"}
BUILTIN_VIEWS = {"none", "weak", "flip", "strong"}


class Site:
    """A folder on sys.path into which a test installs plugin distributions."""

    def __init__(self, tmp_path: Path, monkeypatch):
        self.tmp_path, self.monkeypatch = tmp_path, monkeypatch
        self.modules: list[str] = []
        self.dists: list[str] = []
        self.folders = 0

    def install(self, dist: str, module: str, source: str, version: str = "0.1",
                entry: str | None = None, more: dict[str, str] | None = None) -> Path:
        """Install `dist` (`module`, its entry point) in a folder of its own, first on sys.path.

        `more` maps further entry point names to module sources of the same distribution.
        The distribution installed last comes first on sys.path, so its entry point loads first.
        """
        self.folders += 1
        folder = self.tmp_path / f"site{self.folders}"
        info = folder / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        modules = {entry or dist: (module, source)}
        modules.update({ep: (f"{module}_{ep}", src) for ep, src in (more or {}).items()})
        (info / "entry_points.txt").write_text(
            f"[{ENTRY_POINT_GROUP}]\n" + "".join(f"{ep} = {m}\n" for ep, (m, _) in modules.items()))
        for m, src in modules.values():
            (folder / f"{m}.py").write_text(textwrap.dedent(src))
            self.modules.append(m)
        self.monkeypatch.syspath_prepend(str(folder))
        # Load only this test's plugins, whatever else is installed in the environment.
        self.dists.append(dist)
        self.monkeypatch.setenv("FERBENCH_LOAD_PLUGINS", ",".join(self.dists))
        return folder


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setenv("FERBENCH_LOAD_PLUGINS", "")
    s = Site(tmp_path, monkeypatch)
    yield s
    for name in s.modules:
        sys.modules.pop(name, None)


GOOD = """
    from ferbench import Method, hookimpl
    from ferbench.datasets import DatasetAdapter

    class Echo(Method):
        '''A method that repeats what it saw.'''

    class EchoFaces(DatasetAdapter):
        name = "echo-faces"

    @hookimpl
    def ferbench_register_methods(register):
        register("echo", Echo)
        register("echo-div", Echo)

    @hookimpl
    def ferbench_register_datasets(register):
        register("echo-faces", EchoFaces())
"""


def _claims(name: str, kind: str = "methods") -> str:
    """Source of a plugin module that registers `name` as a method (or dataset)."""
    hook, base, thing = {"methods": ("ferbench_register_methods", "Method", "Thing"),
                         "datasets": ("ferbench_register_datasets", "DatasetAdapter",
                                      "Thing()")}[kind]
    return f"""
        from ferbench import Method, hookimpl
        from ferbench.datasets import DatasetAdapter

        class Thing({base}):
            pass

        @hookimpl
        def {hook}(register):
            register({name!r}, {thing})
    """


def _third_party(reg):
    return {n: p for n, p in reg.plugins.items() if not p.builtin}


def _assert_builtins_intact(reg):
    assert BUILTIN_METHODS <= set(reg.methods)
    assert BUILTIN_DATASETS <= set(reg.datasets)
    assert BUILTIN_PROTOCOLS <= set(reg.protocols)
    assert BUILTIN_VIEWS <= set(reg.views)
    for p in reg.plugins.values():
        if p.builtin:
            assert p.errors == [], (p.name, p.errors)


# --- installed distributions, found through entry points -------------------------------------


def test_installed_plugin_shows_its_methods_and_datasets_with_name_and_version(site):
    site.install("ferbench-echo", "ferbench_echo", GOOD, version="1.2.3")
    reg = build_registry()

    module = sys.modules["ferbench_echo"]
    assert reg.get("methods", "echo") is module.Echo
    assert reg.get("methods", "echo-div") is module.Echo
    assert isinstance(reg.get("datasets", "echo-faces"), module.EchoFaces)
    for kind, name in (("methods", "echo"), ("datasets", "echo-faces")):
        provided = getattr(reg, kind)[name]
        assert (provided.plugin, provided.version) == ("ferbench-echo", "1.2.3")
    info = reg.plugins["ferbench-echo"]
    assert not info.builtin and info.errors == []
    assert info.registered == {"methods": ["echo", "echo-div"], "datasets": ["echo-faces"]}
    _assert_builtins_intact(reg)

    listed = describe(reg)
    assert {"name": "echo", "plugin": "ferbench-echo", "version": "1.2.3"} in listed["methods"]
    row = next(p for p in listed["plugins"] if p["name"] == "ferbench-echo")
    assert row["builtin"] is False and row["errors"] == []


def test_plugin_that_fails_to_import_is_listed_with_its_error_and_the_rest_works(site):
    site.install("ferbench-echo", "ferbench_echo", GOOD)
    site.install("ferbench-broken", "ferbench_broken", """
        raise ImportError("ferbench-broken needs libfoo, which is not installed")
    """)
    reg = build_registry()

    broken = reg.plugins["ferbench-broken"]
    assert not broken.builtin and broken.registered == {}
    assert len(broken.errors) == 1
    assert "ImportError" in broken.errors[0]
    assert "needs libfoo" in broken.errors[0]
    assert "ferbench_broken" in broken.errors[0]  # the entry point that failed
    assert "echo" in reg.methods and reg.plugins["ferbench-echo"].errors == []
    _assert_builtins_intact(reg)


def test_plugin_whose_hook_raises_is_listed_and_that_hooks_registrations_dropped(site):
    site.install("ferbench-flaky", "ferbench_flaky", """
        from ferbench import Method, hookimpl
        from ferbench.datasets import DatasetAdapter

        class Half(Method):
            pass

        class HalfFaces(DatasetAdapter):
            pass

        @hookimpl
        def ferbench_register_methods(register):
            register("half-registered", Half)
            raise RuntimeError("checkpoint index is corrupt")

        @hookimpl
        def ferbench_register_datasets(register):
            register("flaky-faces", HalfFaces())
    """)
    site.install("ferbench-echo", "ferbench_echo", GOOD)
    reg = build_registry()

    flaky = reg.plugins["ferbench-flaky"]
    assert "half-registered" not in reg.methods
    assert len(flaky.errors) == 1
    err = flaky.errors[0]
    assert "ferbench_register_methods" in err
    assert "RuntimeError: checkpoint index is corrupt" in err
    assert re.search(r"ferbench_flaky\.py:\d+", err), err
    # Only the hook that raised loses its registrations; the plugin's other hook still counts.
    assert "flaky-faces" in reg.datasets
    assert flaky.registered == {"datasets": ["flaky-faces"]}
    assert "echo" in reg.methods
    _assert_builtins_intact(reg)


def test_plugin_cannot_replace_a_builtin_name(site):
    site.install("ferbench-usurper", "ferbench_usurper", """
        from ferbench import Method, hookimpl

        class FakeBaseline(Method):
            pass

        class Mine(Method):
            pass

        @hookimpl
        def ferbench_register_methods(register):
            register("baseline", FakeBaseline)
            register("mine", Mine)
    """)
    reg = build_registry()

    assert reg.methods["baseline"].plugin == "ferbench.methods.builtin"
    assert reg.get("methods", "baseline").__module__.startswith("ferbench.")
    usurper = reg.plugins["ferbench-usurper"]
    assert usurper.errors == [("method 'baseline' is already registered by "
                               "ferbench.methods.builtin; skipped")]
    assert usurper.registered == {"methods": ["mine"]}
    assert reg.methods["mine"].plugin == "ferbench-usurper"
    _assert_builtins_intact(reg)


def test_two_plugins_claiming_one_name_neither_is_used_and_both_are_told(site):
    """Which of two claimants a run would get is the accident of load order: refuse both."""
    site.install("ferbench-beta", "ferbench_beta", _claims("twin"))
    site.install("ferbench-alpha", "ferbench_alpha", _claims("twin"))  # first on sys.path
    reg = build_registry()

    assert list(_third_party(reg)) == ["ferbench-alpha", "ferbench-beta"]
    with pytest.raises(ConfigError, match=r"^method 'twin' is registered by more than one "
                                          r"plugin \(ferbench-alpha, ferbench-beta\): "
                                          r"uninstall all but one$"):
        reg.get("methods", "twin")
    assert reg.plugins["ferbench-alpha"].errors == [
        "method 'twin' is also registered by ferbench-beta: neither is used until one is "
        "uninstalled"]
    assert reg.plugins["ferbench-beta"].errors == [
        "method 'twin' is also registered by ferbench-alpha: neither is used until one is "
        "uninstalled"]
    assert reg.plugins["ferbench-beta"].registered == {}


def test_load_plugins_variable_restricts_which_entry_points_load(site, monkeypatch):
    site.install("ferbench-alpha", "ferbench_alpha", _claims("alpha-method"), entry="alpha")
    site.install("ferbench-beta", "ferbench_beta", _claims("beta-method"), entry="beta")

    monkeypatch.setenv("FERBENCH_LOAD_PLUGINS", "ferbench-alpha")  # by distribution name
    reg = build_registry()
    assert set(_third_party(reg)) == {"ferbench-alpha"}
    assert "alpha-method" in reg.methods and "beta-method" not in reg.methods

    monkeypatch.setenv("FERBENCH_LOAD_PLUGINS", " beta , nonexistent")  # by entry point name
    assert set(_third_party(build_registry())) == {"ferbench-beta"}

    monkeypatch.setenv("FERBENCH_LOAD_PLUGINS", "")  # empty: built-ins only
    reg = build_registry()
    assert _third_party(reg) == {}
    _assert_builtins_intact(reg)

    monkeypatch.delenv("FERBENCH_LOAD_PLUGINS")  # unset: every installed plugin
    assert {"ferbench-alpha", "ferbench-beta"} <= set(_third_party(build_registry()))


def test_ferbench_list_names_a_broken_plugin_and_still_lists_the_rest(site, monkeypatch):
    site.install("ferbench-echo", "ferbench_echo", GOOD, version="0.3")
    site.install("ferbench-broken", "ferbench_broken", "import ferbench_no_such_dependency\n")
    monkeypatch.setattr(plugins, "_REGISTRY", None)  # the process-wide registry, rebuilt here

    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"^echo\s+ferbench-echo\s+0\.3$", out, re.MULTILINE), out
    assert re.search(r"^baseline\s+ferbench\.methods\.builtin", out, re.MULTILINE), out
    assert "Plugin problems:" in out
    assert re.search(r"^  ferbench-broken: failed to load entry point .*ModuleNotFoundError"
                     r".*ferbench_no_such_dependency", out, re.MULTILINE), out


def test_a_method_of_a_plugin_that_failed_is_reported_as_such_not_as_unknown(site, monkeypatch):
    site.install("ferbench-coteach", "ferbench_coteach",
                 "import ferbench_no_such_dependency\n", entry="coteach")
    monkeypatch.setattr(plugins, "_REGISTRY", None)
    result = CliRunner().invoke(cli, ["run", "--method", "coteach", "--out", "unused"])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("ferbench: error: method 'coteach' comes from plugin "
                           "ferbench-coteach, which failed: failed to load entry point coteach"), line
    assert "ModuleNotFoundError" in line and "unknown method" not in line
    # another name is still unknown, and the failed plugin is named as a possible source
    result = CliRunner().invoke(cli, ["run", "--method", "mixup", "--out", "unused"])
    assert "unknown method 'mixup'" in result.stderr
    assert "plugins that failed to load, which may provide it: ferbench-coteach" in result.stderr
    # --debug shows the plugin's own traceback
    with pytest.raises(Exception) as e:
        CliRunner().invoke(cli, ["--debug", "run", "--method", "coteach", "--out", "unused"],
                           catch_exceptions=False)
    assert isinstance(e.value.__cause__, ModuleNotFoundError)
    assert not Path("unused").exists()


def test_one_distribution_may_have_several_entry_points(site):
    site.install("ferbench-pair", "ferbench_pair", _claims("pair-method"), entry="methods",
                 more={"datasets": _claims("pair-faces", "datasets")})
    reg = build_registry()
    assert reg.plugins["ferbench-pair"].errors == []
    assert reg.methods["pair-method"].plugin == "ferbench-pair"
    assert reg.datasets["pair-faces"].plugin == "ferbench-pair"


# --- unit tests: plugin objects handed to build_registry directly ----------------------------


@pytest.fixture
def builtins_only(monkeypatch):
    """No installed third-party plugin takes part: the unit tests see built-ins and their own."""
    monkeypatch.setenv("FERBENCH_LOAD_PLUGINS", "")


class UnitA(Method):
    """A method that registers; it never runs."""


class UnitB(Method):
    """Another."""


class Faces(DatasetAdapter):
    """A dataset adapter that registers; it never reads."""


class TwoMethods:
    @hookimpl
    def ferbench_register_methods(self, register):
        register("unit-a", UnitA)
        register("unit-b", UnitB)

    @hookimpl
    def ferbench_register_protocols(self, register):
        register("unit-protocol", Protocol())


def test_extra_plugin_object_registers_its_names(builtins_only):
    plugin = TwoMethods()
    reg = build_registry(extra_plugins=[plugin])
    assert reg.get("methods", "unit-a") is UnitA and reg.get("methods", "unit-b") is UnitB
    assert "unit-protocol" in reg.protocols
    provider = reg.methods["unit-a"].plugin
    assert reg.plugins[provider].registered == {"methods": ["unit-a", "unit-b"],
                                               "protocols": ["unit-protocol"]}
    assert reg.plugins[provider].errors == []
    _assert_builtins_intact(reg)
    # Nothing leaks into the next registry: every build starts from a fresh manager.
    assert "unit-a" not in build_registry().methods


def test_extra_plugin_hook_that_raises_is_isolated(builtins_only):
    class Raises:
        @hookimpl
        def ferbench_register_methods(self, register):
            register("never", UnitA)
            raise KeyError("missing config key")

    class Fine:
        @hookimpl
        def ferbench_register_methods(self, register):
            register("fine", UnitB)

    reg = build_registry(extra_plugins=[Raises(), Fine()])
    assert "never" not in reg.methods and reg.get("methods", "fine") is UnitB
    errors = [e for p in reg.plugins.values() for e in p.errors]
    assert len(errors) == 1 and "ferbench_register_methods raised KeyError" in errors[0]
    assert "missing config key" in errors[0]
    assert "test_plugins.py:" in errors[0]


def test_extra_plugin_name_collisions_are_reported_and_a_contested_name_refused(builtins_only):
    class First:
        @hookimpl
        def ferbench_register_datasets(self, register):
            register("shared-name", Faces())
            register("synthfer", Faces())  # not the built-in

    class Second:
        @hookimpl
        def ferbench_register_datasets(self, register):
            register("shared-name", Faces())

    reg = build_registry(extra_plugins=[First(), Second()])
    assert reg.datasets["synthfer"].plugin == "ferbench.datasets.builtin"
    first, second = (reg.plugins[reg.datasets["shared-name"].plugin],
                     next(p for p in reg.plugins.values() if p.name.startswith("Second")))
    assert first.errors == [("dataset 'synthfer' is already registered by "
                             "ferbench.datasets.builtin; skipped"),
                            (f"dataset 'shared-name' is also registered by {second.name}: "
                             f"neither is used until one is uninstalled")]
    assert second.errors == [(f"dataset 'shared-name' is also registered by {first.name}: "
                              f"neither is used until one is uninstalled")]
    with pytest.raises(ConfigError, match="registered by more than one plugin"):
        reg.get("datasets", "shared-name")


def test_extra_plugin_with_a_hook_signature_that_breaks_the_spec_is_reported(builtins_only):
    class WrongSignature:
        @hookimpl
        def ferbench_register_methods(self, register, device):  # `device` is not in the spec
            register("wrong", int)

    reg = build_registry(extra_plugins=[WrongSignature()])
    info = next(p for p in reg.plugins.values() if p.name.startswith("WrongSignature"))
    assert len(info.errors) == 1 and info.errors[0].startswith("cannot register:")
    assert "device" in info.errors[0]
    assert "wrong" not in reg.methods
    _assert_builtins_intact(reg)


def test_spec_violation_is_reported_on_one_line(builtins_only):
    class WrongSignature:
        @hookimpl
        def ferbench_register_methods(self, register, device):
            register("wrong", int)

    reg = build_registry(extra_plugins=[WrongSignature()])
    info = next(p for p in reg.plugins.values() if p.name.startswith("WrongSignature"))
    assert "\n" not in info.errors[0]


def test_unknown_name_suggests_the_closest(builtins_only):
    reg = build_registry()
    with pytest.raises(ConfigError, match=r"unknown method 'baselin'; did you mean 'baseline'\?"):
        reg.get("methods", "baselin")
    with pytest.raises(ConfigError, match=r"did you mean 'ferplus'\?"):
        reg.get("datasets", "ferplsu")


# --- integration: the real command in a fresh process ----------------------------------------


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_plugins() -> dict[str, Path]:
    """{project name: pyproject} of each package in plugins/ declaring a ferbench entry point."""
    out = {}
    for pyproject in sorted((REPO / "plugins").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("entry-points", {}).get(ENTRY_POINT_GROUP):
            out[_normalise(project["name"])] = pyproject
    return out


def test_ferbench_list_json_shows_builtins_and_every_plugin_of_this_repository():
    env = {k: v for k, v in os.environ.items() if k != "FERBENCH_LOAD_PLUGINS"}
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from ferbench.cli import main; sys.exit(main())",
         "list", "--json"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)

    assert BUILTIN_METHODS <= {m["name"] for m in info["methods"]}
    assert BUILTIN_DATASETS <= {d["name"] for d in info["datasets"]}
    assert BUILTIN_PROTOCOLS <= {p["name"] for p in info["protocols"]}
    assert BUILTIN_VIEWS <= {v["name"] for v in info["views"]}
    for kind in ("methods", "datasets", "protocols", "views"):
        for row in info[kind]:
            assert set(row) == {"name", "plugin", "version"}
    builtin = {p["name"] for p in info["plugins"] if p["builtin"]}
    assert builtin == set(plugins.DEFAULT_PLUGINS)

    discovered = {_normalise(p["name"]): p for p in info["plugins"] if not p["builtin"]}
    declared = _declared_plugins()
    missing = set(declared) - set(discovered)
    assert not missing, (f"not discovered (install with `pip install -e plugins/<dir>`): "
                         f"{sorted(str(declared[m].parent) for m in missing)}")
    assert set(discovered) == set(declared), f"installed but not in plugins/: {sorted(discovered)}"
    for name, row in discovered.items():
        assert row["errors"] == [], f"{name}: {row['errors']}"
        assert row["registered"], f"{name} registers nothing"


# --- a dataset plugin's faults reach the user as the built-ins' do ---------------------------

FAULTY_FACES = """
    import numpy as np
    from ferbench import hookimpl
    from ferbench.datasets.base import Dataset, DatasetAdapter
    from ferbench.datasets.samples import ArraySource, Samples

    CLASSES = ("neutral", "happiness")

    class FaultyFaces(DatasetAdapter):
        name = "faulty-faces"
        layouts = {"arrays": "made in memory"}
        options = {"fault": ""}
        needs_root = False

        def detect(self, root):
            return ["arrays"]

        def open(self, root, layout, options):
            rng = np.random.default_rng(0)

            def split(name, n):
                ids = [f"{name}/{i}.png" for i in range(n)]
                if options["fault"] == "duplicate":
                    ids[-1] = ids[0]
                images = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
                return Samples(self.name, name, tuple(ids), ArraySource(images),
                               np.arange(n) % 2, CLASSES)

            if options["fault"] == "crash":
                return {"label": 1}["emotion"]
            splits = {"train": split("train", 8), "test": split("test", 4)}
            if options["fault"] == "no-test":
                del splits["test"]
            return Dataset(self.name, root, layout, CLASSES, splits)

    @hookimpl
    def ferbench_register_datasets(register):
        register("faulty-faces", FaultyFaces())
"""


@pytest.mark.parametrize("fault,message", [
    ("no-test", "faulty-faces: no test split 'test' found (splits read: train)"),
    ("duplicate", "faulty-faces: split 'train' lists 'train/0.png' twice"),
])
def test_a_dataset_plugin_reading_a_malformed_dataset_is_one_error_line(site, monkeypatch, fault,
                                                                        message):
    site.install("ferbench-faulty", "ferbench_faulty", FAULTY_FACES)
    monkeypatch.setattr(plugins, "_REGISTRY", None)  # the CLI discovers plugins afresh
    for command in (["data", "check", "faulty-faces"],
                    ["run", "--dataset", "faulty-faces", "--epochs", "1", "--out", "unused"]):
        res = CliRunner().invoke(cli, [*command, "-o", f"fault={fault}"])
        assert res.exit_code == 2, (command, res.output)
        errors = [line for line in res.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith(f"ferbench: error: {message}"), \
            res.stderr
        assert "Traceback" not in res.output


def test_a_bug_in_a_dataset_plugin_names_the_plugin_module(site, monkeypatch):
    site.install("ferbench-faulty", "ferbench_faulty", FAULTY_FACES)
    monkeypatch.setattr(plugins, "_REGISTRY", None)
    res = CliRunner().invoke(cli, ["data", "check", "faulty-faces", "-o", "fault=crash"])
    assert res.exit_code == 1
    [line] = res.stderr.splitlines()[-1:]
    assert re.fullmatch(r"ferbench: internal error in ferbench_faulty \(ferbench_faulty\.py:\d+, "
                        r"open\): KeyError: 'emotion' \(run with --debug for the traceback\)",
                        line), line


# --- a plugin's own hooks, kept on the registry's plugin manager -----------------------------


class LabelSpaces:
    """The hooks a label-distribution plugin specifies for other plugins to implement."""

    @hookspec
    def ferbench_ldl_spaces(self, dataset):
        """Return the name of a label space offered for `dataset`; every answer is collected."""


class AlreadySpecified:
    @hookspec
    def ferbench_register_methods(self):
        """A second spec for a built-in hook, without its `register`."""


class LdlCore:
    """Adds the hooks of `LabelSpaces`."""

    @hookimpl
    def ferbench_add_hookspecs(self, pluginmanager):
        pluginmanager.add_hookspecs(LabelSpaces)


class ValenceArousal:
    """Implements a hook that `LdlCore` specifies."""

    @hookimpl
    def ferbench_ldl_spaces(self, dataset):
        return f"valence-arousal of {dataset}"


def _info(reg, prefix: str):
    return next(p for p in reg.plugins.values() if p.name.startswith(prefix))


@pytest.mark.parametrize("spec_first", [True, False])
def test_a_plugin_adds_a_hook_and_another_plugin_answers_it(builtins_only, monkeypatch,
                                                            spec_first):
    """Which plugin loads first does not matter: the hook is specified before any is called."""
    pair = [LdlCore(), ValenceArousal()]
    reg = build_registry(extra_plugins=pair if spec_first else pair[::-1])
    assert [p.errors for p in reg.plugins.values() if p.errors] == []
    monkeypatch.setattr(plugins, "_REGISTRY", reg)

    pm = plugins.plugin_manager()
    assert pm is reg.pm
    assert pm.hook.ferbench_ldl_spaces(dataset="ferplus") == ["valence-arousal of ferplus"]
    # Nothing leaks into the next registry: the spec belongs to the manager that loaded it.
    assert not hasattr(build_registry().pm.hook, "ferbench_ldl_spaces")


@pytest.mark.parametrize("implemented_first", [True, False])
def test_an_implementation_that_breaks_a_plugins_hookspec_is_the_implementers_error(
        builtins_only, implemented_first):
    class WrongArgs:
        @hookimpl
        def ferbench_ldl_spaces(self, dataset, device):  # `device` is not in LdlCore's spec
            return "never"

        @hookimpl
        def ferbench_register_methods(self, register):
            register("wrong-args-method", UnitA)

    trio = [WrongArgs(), LdlCore(), ValenceArousal()]
    reg = build_registry(extra_plugins=trio if implemented_first else trio[1:] + trio[:1])

    [error] = _info(reg, "WrongArgs").errors
    assert error.startswith("cannot register:") and "device" in error and "\n" not in error
    if implemented_first:
        assert error.endswith("(hookspec added by LdlCore-1)")
    # Refused whole, as when the spec exists before it registers: none of its hooks runs.
    assert "wrong-args-method" not in reg.methods
    assert _info(reg, "LdlCore").errors == [] and _info(reg, "ValenceArousal").errors == []
    assert reg.pm.hook.ferbench_ldl_spaces(dataset="rafdb") == ["valence-arousal of rafdb"]
    _assert_builtins_intact(reg)


def test_a_plugin_whose_add_hookspecs_raises_is_listed_and_the_rest_works(builtins_only):
    class Raises:
        @hookimpl
        def ferbench_add_hookspecs(self, pluginmanager):
            raise ModuleNotFoundError("No module named 'ferbench_ldl_specs'")

        @hookimpl
        def ferbench_register_methods(self, register):
            register("raises-method", UnitA)

    class Respecifies:
        @hookimpl
        def ferbench_add_hookspecs(self, pluginmanager):
            pluginmanager.add_hookspecs(AlreadySpecified)

    reg = build_registry(extra_plugins=[Raises(), Respecifies(), LdlCore(), ValenceArousal()])
    [raised] = _info(reg, "Raises").errors
    assert re.fullmatch(r"ferbench_add_hookspecs raised ModuleNotFoundError: No module named "
                        r"'ferbench_ldl_specs' \(test_plugins\.py:\d+\)", raised), raised
    [respecified] = _info(reg, "Respecifies").errors
    assert re.fullmatch(r"ferbench_add_hookspecs raised ValueError: hook ferbench_register_methods "
                        r"is already specified \(test_plugins\.py:\d+\)", respecified), respecified
    # Like any other hook that raises: its other hooks still count.
    assert reg.methods["raises-method"].plugin.startswith("Raises")
    assert reg.pm.hook.ferbench_ldl_spaces(dataset="jaffe") == ["valence-arousal of jaffe"]
    _assert_builtins_intact(reg)


# --- augmentation views from a plugin --------------------------------------------------------


class Inverted:
    """A plugin adding the view `inverted`: each face's negative blended in by `strength`.

    It keeps the size of every batch it was given, so a test sees what it was applied to.
    """

    def __init__(self):
        self.batches: list[int] = []

    def invert(self, images, gen, strength):
        self.batches.append(len(images))
        x = images.permute(0, 3, 1, 2).float() / 255
        return x + strength * (1 - 2 * x)

    @hookimpl
    def ferbench_register_views(self, register):
        register("inverted", View(self.invert, {"strength": 1.0}, {"strength": (0.0, 1.0)}))


def test_a_plugin_view_is_listed_and_a_method_trains_on_it(builtins_only, monkeypatch, tmp_path):
    from ferbench.runner import RunRequest, run

    plugin = Inverted()
    monkeypatch.setattr(plugins, "_REGISTRY", build_registry(extra_plugins=[plugin]))

    listed = CliRunner().invoke(cli, ["list"])
    assert listed.exit_code == 0, listed.output
    assert re.search(r"^Views:\n(.*\n)*inverted\s+Inverted-0\s+unknown$", listed.stdout,
                     re.MULTILINE), listed.stdout
    assert re.search(r"^weak\s+ferbench\.data\.views\s", listed.stdout, re.MULTILINE)
    as_json = json.loads(CliRunner().invoke(cli, ["list", "--json"]).stdout)
    assert {"name": "inverted", "plugin": "Inverted-0", "version": "unknown"} in as_json["views"]

    [path] = run(RunRequest(
        methods=["baseline"], data_options={"n_train": 96, "n_test": 48, "size": 24},
        flags={"epochs": 1, "batch_size": 16, "image_size": 24, "device": "cpu",
               "precision": "fp32"},
        overrides=["views=[[inverted,{strength:0.5}]]"], out=str(tmp_path),
        leaderboard=False, show_progress=False))
    record = json.loads(path.read_text())
    assert record["config"]["method"]["views"] == [["inverted", {"strength": 0.5}]]
    assert sum(plugin.batches) == 96, plugin.batches  # every training face went through it


# --- what a plugin registers is checked ------------------------------------------------------

WRONG = """
    from dataclasses import dataclass

    from ferbench import Method, MethodConfig, View, hookimpl

    def not_a_method():
        pass

    class NoDecorator(MethodConfig):
        alpha: float = 0.2

    class Undecorated(Method):
        Config = NoDecorator

    @dataclass
    class Loose:
        alpha: float = 0.2

    class LooseConfig(Method):
        Config = Loose

    class Right(Method):
        pass

    def invert(images, gen):
        return 1 - images.permute(0, 3, 1, 2).float() / 255

    @hookimpl
    def ferbench_register_methods(register):
        register("not-a-class", not_a_method)
        register("undecorated", Undecorated)
        register("loose", LooseConfig)
        register("right", Right)

    @hookimpl
    def ferbench_register_datasets(register):
        register("dict-faces", {"train": "faces/"})

    @hookimpl
    def ferbench_register_protocols(register):
        register("noise40", "noise rate=40")

    @hookimpl
    def ferbench_register_views(register):
        register("bare-function", invert)
        register("negative", View(invert))
"""
WRONG_ERRORS = [
    "method 'not-a-class' is not a Method subclass (got function)",
    "method 'undecorated': its Config NoDecorator is not a dataclass (add @dataclass)",
    "method 'loose': its Config is not a MethodConfig subclass (got class Loose)",
    "dataset 'dict-faces' is not a DatasetAdapter instance (got dict object)",
    "protocol 'noise40' is not a Protocol instance (got str object)",
    "view 'bare-function' is not a View instance (got function)",
]


def test_a_wrong_object_is_listed_as_its_plugins_error_and_never_registered(site, monkeypatch):
    site.install("ferbench-wrong", "ferbench_wrong", WRONG, version="0.1")
    monkeypatch.setattr(plugins, "_REGISTRY", None)  # the CLI discovers plugins afresh

    listed = CliRunner().invoke(cli, ["list"])
    assert listed.exit_code == 0, listed.output
    out = listed.stdout
    for error in WRONG_ERRORS:
        assert f"\n  ferbench-wrong: {error}\n" in out, out
    # The rest still works: the same plugin's right objects, and every built-in.
    assert re.search(r"^right\s+ferbench-wrong\s+0\.1$", out, re.MULTILINE), out
    assert re.search(r"^negative\s+ferbench-wrong\s+0\.1$", out, re.MULTILINE), out
    assert re.search(r"^baseline\s+ferbench\.methods\.builtin", out, re.MULTILINE), out

    info = json.loads(CliRunner().invoke(cli, ["list", "--json"]).stdout)
    row = next(p for p in info["plugins"] if p["name"] == "ferbench-wrong")
    assert row["errors"] == WRONG_ERRORS
    assert row["registered"] == {"methods": ["right"], "views": ["negative"]}
    named = {kind: {r["name"] for r in info[kind]} for kind in plugins.KINDS}
    assert not {"not-a-class", "undecorated", "loose"} & named["methods"]
    assert "dict-faces" not in named["datasets"] and "noise40" not in named["protocols"]
    assert "bare-function" not in named["views"]
    _assert_builtins_intact(plugins.registry())
    with pytest.raises(ConfigError, match="unknown method 'not-a-class'"):
        plugins.registry().get("methods", "not-a-class")


# --- what a plugin's hook module costs to import ---------------------------------------------


def test_a_plugins_hook_module_imports_without_torch():
    """`import ferbench` must not load torch (seconds): `ferbench list` imports every plugin."""
    code = ("import sys, ferbench.hookspecs; from ferbench import hookimpl, View\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'torch')\n"
            "assert not loaded, loaded[:5]\n"
            "from ferbench import Method, split_epochs\n"
            "assert 'torch' in sys.modules and split_epochs(2, [1, 1]) == [1, 1]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
