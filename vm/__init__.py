"""The VM harness: wharfie's privileged suites inside a throw-away Debian VM (issue 7).

The host this project runs on boots cgroup v1 and cannot run a stock kernel under its (PVM)
KVM, so the real cgroup-v2 proof happens in a VM emulated by QEMU (TCG) or, on a workstation
with a normal KVM, accelerated. Layout:

* ``build-box.sh``, ``provision.sh``, ``run-tests.sh``, ``cgroup.sh``: plain scripts, no Vagrant
  dependency (the box build, in-guest install, in-guest test run, hierarchy switch).
* :mod:`vm.box`: the cached box and the pip wheelhouse (the guest installs offline).
* :mod:`vm.machine`: the ``Machine`` protocol and the saved state of a running VM.
* :mod:`vm.qemu` (default) and :mod:`vm.vagrant`: the two backends. Both boot the same box
  artifacts and both expose the VM's SSH on 127.0.0.1 only.
* :mod:`vm.remote`: fabric commands and rsync over the generated ``ssh-config``.
* :mod:`vm.harness`: one test cycle; :mod:`vm.__main__`: ``python -m vm test|up|ssh|destroy|build-box``.

The host checks after a suite are ``tests/vm/test_vm_host.py`` (pytest-testinfra, marker ``vm``).
"""
