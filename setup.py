"""Everything about the package is in pyproject.toml; this file only adds the start-up hook
that lets lm-eval's own command line find the "archbench" model (suites/lm_eval_hook.py):
its code goes into site-packages as archbench-lm-eval.pth, in wheels and editable installs."""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "archbench-lm-eval.pth"


class BuildPyWithHook(build_py):
    def run(self):
        super().run()
        source = Path(__file__).resolve().parent.joinpath("suites", "lm_eval_hook.py").read_text()
        # a .pth line that starts with "import" is executed; the hook is one exec'd string
        line = f"import sys; exec(compile({source!r}, {PTH!r}, 'exec'), {{'__name__': 'archbench_lm_eval_hook'}})\n"
        # an editable install writes straight into the wheel's root; a normal build into build_lib
        root = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        Path(root).mkdir(parents=True, exist_ok=True)
        Path(root, PTH).write_text(line)


setup(cmdclass={"build_py": BuildPyWithHook})
