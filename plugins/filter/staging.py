# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Staging the model and the image: thin wrappers over ``plugins/module_utils/_staging.py``. The docs of each filter
live beside this file in ``<filter>.yml``."""

from __future__ import annotations

from ansible_collections.dgxspark.sglang.plugins.filter.cluster import plain
from ansible_collections.dgxspark.sglang.plugins.module_utils._staging import hub_request, image_facts, probed, render_record, transfers


def staging_hub_request(plan, staging_results):
    """Filter: the revision preflight asks the hub about, or '' when the model is pinned without it."""
    plan = plain(plan)
    group = next(iter(plan['groups'].values()))
    return hub_request(group['model'], probed(plain(staging_results)), group['model_refresh']) or ''


def staging_record(model, image=None):
    """Filter: the text of the pins record the staging role writes on every node."""
    return render_record(plain(model), plain(image))


def staging_image(inspect, requested, pinned_digest=None):
    """Filter: the image's ID, digest and size, from docker image inspect's JSON on the source."""
    return image_facts(plain(inspect), requested, pinned_digest)


def staging_copy_line(pair, what):
    """Filter: one line of the staging report from (a registered staging_fetch result, the host)."""
    result, host = plain(pair)
    result = result or {}
    if result.get('skipped') or not result.get('fetched'):
        return '%s: no %s to copy' % (host, what)
    got, secs = result.get('transferred_bytes', 0), result.get('seconds') or 0
    if not got:
        return '%s: would copy %d %s' % (host, len(result['fetched']), what)
    rate = ', %.0f MB/s' % (got / secs / 1e6) if secs else ''
    return '%s: %s copied over CX7, %.3f GB in %.2f s%s' % (host, what, got / 1e9, secs, rate)


def staging_transfers(plan, group, hosts):
    """Filter: who downloads, pulls, serves and receives what (see _staging.transfers)."""
    return transfers(plain(plan), group, list(plain(hosts)))


class FilterModule:
    """dgxspark.sglang staging."""

    def filters(self):
        return {
            'staging_hub_request': staging_hub_request,
            'staging_copy_line': staging_copy_line,
            'staging_image': staging_image,
            'staging_record': staging_record,
            'staging_transfers': staging_transfers,
        }
