"""The wheel carries the starter project `arpu init` writes (models/, macros/, metrics/, seeds/
beside the package in a checkout) as runner/starter/; pyproject.toml holds everything else."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

STARTER = ("models", "macros", "metrics", "seeds")


class BuildWithStarter(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads them from the checkout itself
            return
        starter = Path(self.build_lib) / "runner" / "starter"
        for folder in STARTER:
            shutil.copytree(folder, starter / folder, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithStarter})
