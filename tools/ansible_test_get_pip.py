"""Stand-in for ansible-test's pip bootstrap script (get-pip-<version>.py), for machines that cannot reach
ci-files.testing.ansible.com but can reach a package index.

ansible-test creates each sanity test's virtual environment without pip and then runs its cached
bootstrap script, ~/.ansible/test/cache/get_pip_<version>.py, as ``python <script> [pip options]
pip==<version> --no-setuptools --no-wheel`` with that environment's Python. tools/sanity.py puts this
file there. It installs pip with the interpreter's own ``ensurepip`` (no download), then the pip
version ansible-test asked for from the package index pip is configured for.
"""

import subprocess
import sys

DROP = ("--no-setuptools", "--no-wheel")  # get-pip.py options, not pip's


def main():
    args = [arg for arg in sys.argv[1:] if arg not in DROP]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args])


if __name__ == "__main__":
    main()
