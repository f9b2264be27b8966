"""The README's test command is what CI runs, and its main command uses the bundled demo model."""

from conftest import REPO


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci_command = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(ci_command) == 1 and ci_command[0] in readme


def test_main_command_uses_the_bundled_model():
    readme = (REPO / "README.md").read_text()
    main = next(line for line in readme.splitlines() if line.startswith("python3 -m venv") and "bert2onnxq export" in line)
    assert "models/minilm-l6-sst2-demo" in main and "bert2onnxq validate" in main
    assert "bert2onnxq convert" in main and "--method ocs" in main
    assert (REPO / "models" / "minilm-l6-sst2-demo" / "model.safetensors").is_file()


def test_main_command_runs_on_a_bare_clone(tmp_path):
    """README command 1's tool steps, in a folder with only the repository's models/ (no ../shared beside it)."""
    import shlex
    import subprocess
    import sys

    readme = (REPO / "README.md").read_text()
    main = next(line for line in readme.splitlines() if line.startswith("python3 -m venv") and "bert2onnxq export" in line)
    steps = [shlex.split(part) for part in main.split(" && ") if part.startswith("bert2onnxq ")]
    assert [s[1] for s in steps] == ["export", "convert", "validate"]
    (tmp_path / "clone").mkdir()
    (tmp_path / "clone" / "models").symlink_to(REPO / "models")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for step in steps:
        proc = subprocess.run([sys.executable, "-m", "bert2onnxq", *step[1:]], cwd=tmp_path / "clone", env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (step, proc.stderr[-2000:])
    assert not (tmp_path / "shared").exists()
    assert "accuracy" in proc.stdout and "agreement" in proc.stdout.lower(), proc.stdout
