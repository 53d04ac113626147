# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write the doctor's tarball on the controller in one step: doctor_pack.py TARBALL < FILES.json

FILES.json is a list of {path, text}, already redacted by the doctor role (path relative to the tarball's top
folder, whose name is the tarball's without .tar.gz). Each becomes a file of mode 0600 in TARBALL (gzip), written to a
temporary name first and moved in place, so that a tarball is never half written. Prints the tarball's path.
"""

import io
import json
import os
import sys
import tarfile
import tempfile
import time


def main(argv):
    if len(argv) != 2 or not argv[1].endswith('.tar.gz'):
        sys.exit('usage: doctor_pack.py TARBALL.tar.gz < FILES.json')
    tarball = os.path.abspath(argv[1])
    top = os.path.basename(tarball)[:-len('.tar.gz')]
    files = json.load(sys.stdin)
    folder = os.path.dirname(tarball)
    os.makedirs(folder, exist_ok=True)
    now = time.time()
    handle, partial = tempfile.mkstemp(dir=folder, prefix='.%s.' % top)
    os.close(handle)
    try:
        with tarfile.open(partial, 'w:gz') as tar:
            for item in sorted(files, key=lambda f: f['path']):
                path = os.path.normpath(item['path'])
                if path.startswith(('/', '..')):
                    sys.exit('doctor_pack.py: %r is not a path inside the tarball' % item['path'])
                data = item['text'].encode('utf-8')
                info = tarfile.TarInfo('%s/%s' % (top, path))
                info.size, info.mode, info.mtime = len(data), 0o600, now
                tar.addfile(info, io.BytesIO(data))
        os.chmod(partial, 0o600)
        os.replace(partial, tarball)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    print(tarball)


if __name__ == '__main__':
    main(sys.argv)
