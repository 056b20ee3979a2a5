"""Configure a headless Scipion (no GUI, no downloads) in this interpreter.

pyworkflow reads its configuration from the environment once, when it is first
imported, so ``configure`` must run before anything imports pyworkflow, pwem,
tomo or etpicker (etpicker's ``__init__`` imports pwem). This module therefore
imports none of them: the test ``conftest.py`` and the demo both call it first.
"""
import os
import sys

HOSTS_CONF = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d --map-by node %_(COMMAND)s
NAME = SCIPION_HOST
ADDRESS = localhost
"""


def configure(user_data):
    """Point Scipion at ``user_data`` (projects, logs, config) and return it.

    The core runs with this interpreter (``ETPICKER_ENV_ACTIVATION`` empty), the
    embedded set-up used by the tests and the demo.
    """
    user_data = os.path.abspath(user_data)
    config_dir = os.path.join(user_data, "config")
    os.makedirs(config_dir, exist_ok=True)
    hosts = os.path.join(config_dir, "hosts.conf")
    with open(hosts, "w") as handle:
        handle.write(HOSTS_CONF)
    os.environ.update({
        "SCIPION_DOMAIN": "pwem",
        "SCIPION_HOME": user_data,
        "SCIPION_USER_DATA": user_data,
        "SCIPION_HOSTS": hosts,
        # Protocols run in a subprocess `$SCIPION_PYTHON pw_protocol_run.py`; the
        # default `python3` would lack pyworkflow.
        "SCIPION_PYTHON": sys.executable,
        "SCIPION_NOTIFY": "False",
        "SCIPION_TEST_NOSYNC": "True",
        "ETPICKER_ENV_ACTIVATION": "",
    })
    return user_data
