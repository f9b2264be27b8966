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
