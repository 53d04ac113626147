# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The staging role's short-lived server on the source node (Python 3 standard library only).

    staging_server.py --bind CX7_ADDRESS --port PORT --blobs DIR [--image-id sha256:... --image-name NAME]

Bound to the source's CX7 address only, it serves what the other nodes of the group pull with the staging_fetch
module, and nothing else:
- GET /blobs/<etag>: one file of the model's Hugging Face cache (the names are checksums; no listing, no path);
- GET /image/<image id>: `docker save NAME` of that image, streamed (only the ID given with --image-id; NAME is
  its tag, so that the receivers get the tag with it, or the ID itself for an image pinned by digest).
Run as a transient systemd unit (systemd-run --property=RuntimeMaxSec=...), stopped by the role when every node
holds what it needs. Each answer is logged with its bytes (journalctl -u dgxspark-staging).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOB = re.compile(r'^/blobs/([0-9a-f]{40}|[0-9a-f]{64})$')
IMAGE = re.compile(r'^/image/(sha256:[0-9a-f]{64})$')
CHUNK = 4 * 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    server_version = 'dgxspark-staging/1'

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        sys.stdout.write('%s %s\n' % (self.client_address[0], format % args))
        sys.stdout.flush()

    def do_GET(self):  # pylint: disable=invalid-name
        blob = BLOB.match(self.path)
        image = IMAGE.match(self.path)
        if blob and self.server.blobs:
            self.send_blob(os.path.join(self.server.blobs, blob.group(1)))
        elif image and image.group(1) == self.server.image_id:
            self.send_image(image.group(1))
        else:
            self.send_error(404)

    def send_blob(self, path):
        try:
            handle = open(path, 'rb')
        except OSError:
            self.send_error(404)
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            self.send_response(200)
            self.send_header('Content-Type', 'application/octet-stream')
            self.send_header('Content-Length', str(size))
            self.end_headers()
            shutil.copyfileobj(handle, self.wfile, CHUNK)

    def send_image(self, image_id):
        save = subprocess.Popen(['docker', 'save', self.server.image_name or image_id], stdout=subprocess.PIPE)
        self.send_response(200)
        self.send_header('Content-Type', 'application/x-tar')
        self.send_header('Connection', 'close')
        self.end_headers()
        try:
            shutil.copyfileobj(save.stdout, self.wfile, CHUNK)
        finally:
            save.stdout.close()
            save.wait()
        self.close_connection = True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--bind', required=True)
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--blobs', help="the model's blobs folder; empty: no model files (only the image)")
    parser.add_argument('--image-id')
    parser.add_argument('--image-name')
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    server.blobs = args.blobs
    server.image_id = args.image_id
    server.image_name = args.image_name
    image = ' and image ' + args.image_id if args.image_id else ''
    sys.stdout.write('staging server on %s:%d: %s%s\n' % (args.bind, args.port, args.blobs, image))
    sys.stdout.flush()
    server.serve_forever()


if __name__ == '__main__':
    main()
