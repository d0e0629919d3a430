"""Every relative link in README.md and docs/*.md reaches a file, and every ``#anchor`` a
heading of that file, so moving a section cannot leave a dead link behind."""
import glob
import os.path as osp
import re

import pytest

from tests.conftest import REPO

PAGES = ['README.md', *sorted(osp.relpath(p, REPO)
                              for p in glob.glob(osp.join(REPO, 'docs', '*.md')))]
# [text](target) and ![alt](target); the target ends at whitespace or ')'.
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)')
FENCE = re.compile(r'^(```|~~~)')


def unfenced(text: str) -> list:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation but hyphens
    and underscores dropped, spaces to hyphens."""
    text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link: its text
    text = text.replace('`', '').replace('*', '').strip().lower()
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(path: str) -> set:
    """The anchors of a markdown file's headings (a repeated one gets -1, -2, ...)."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    seen: dict = {}
    found = set()
    for line in unfenced(text):
        match = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f'{base}-{count}')
    return found


def links(page: str) -> list:
    """The link targets of a page, outside code (fenced blocks and inline spans)."""
    with open(osp.join(REPO, page), encoding='utf-8') as f:
        text = '\n'.join(unfenced(f.read()))
    return LINK.findall(re.sub(r'`[^`]*`', '', text))


def test_the_slug_follows_github_and_links_are_found():
    assert slug("1. The augmenter's objective: the two terms' balance") == \
        '1-the-augmenters-objective-the-two-terms-balance'
    assert slug('TST on COCO (mmdet)') == 'tst-on-coco-mmdet'
    assert slug('`TSTDistiller` options') == 'tstdistiller-options'
    # the pattern still finds links: the README links to every page of docs/
    assert {f'docs/{osp.basename(p)}' for p in PAGES[1:]} <= \
        {target.partition('#')[0] for target in links('README.md')}


@pytest.mark.parametrize('page', PAGES)
def test_relative_links_reach_a_file_and_a_heading(page):
    broken = []
    for target in links(page):
        if re.match(r'[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition('#')
        file = osp.normpath(osp.join(REPO, osp.dirname(page), path)) if path else \
            osp.join(REPO, page)
        if not osp.exists(file):
            broken.append(f'{target}: no file {osp.relpath(file, REPO)}')
        elif anchor and (not file.endswith('.md') or anchor not in anchors(file)):
            broken.append(f'{target}: no heading #{anchor} in {osp.relpath(file, REPO)}')
    assert not broken, f'{page}: ' + '; '.join(broken)
