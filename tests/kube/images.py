"""Container images as the kubelet pulls them: which references it cannot parse (``InvalidImageName``, with
distribution/reference's rules), and what a failed pull says (containerd's ``NotFound``)."""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping

__all__ = ['BadImages', 'go_quote', 'invalid_image', 'pull_error']

BadImages = Iterable[str] | Mapping[str, str] | Callable[[str], 'bool | str | None']


def go_quote(text: str) -> str:
    """Go's ``%q`` (close enough for image names and messages)."""
    return json.dumps(text, ensure_ascii=False)


_ALNUM = r'[a-z0-9]+'
_PATH_COMPONENT = rf'{_ALNUM}(?:(?:[._]|__|[-]+){_ALNUM})*'
_DOMAIN_COMPONENT = r'(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])'
_DOMAIN = rf'(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?'
_IMAGE_REFERENCE = re.compile(
    rf'((?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)'
    r'(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?'
    r'(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?')


def _split_docker_domain(name: str) -> tuple[str, str]:
    """distribution/reference's ``splitDockerDomain``: ``busybox`` is ``docker.io`` + ``library/busybox``."""
    first, slash, rest = name.partition('/')
    if not slash or (not any(c in first for c in '.:') and first != 'localhost' and first.lower() == first):
        domain, remainder = 'docker.io', name
    else:
        domain, remainder = first, rest
    if domain == 'index.docker.io':
        domain = 'docker.io'
    if domain == 'docker.io' and '/' not in remainder:
        remainder = 'library/' + remainder
    return domain, remainder


def invalid_image(image: str) -> str | None:
    """The kubelet's InvalidImageName message for an image reference it cannot parse, or ``None``."""
    error: str | None
    if re.fullmatch(r'[a-f0-9]{64}', image):
        error = f'invalid repository name ({image}), cannot specify 64-byte hexadecimal strings'
    else:
        domain, remainder = _split_docker_domain(image)
        remote = remainder.partition(':')[0]
        if remote.lower() != remote:
            error = f'invalid reference format: repository name ({remote}) must be lowercase'
        elif (m := _IMAGE_REFERENCE.fullmatch(f'{domain}/{remainder}')) is None:
            error = 'invalid reference format'
        elif len(m[1]) > 255:
            error = 'repository name must not be more than 255 characters'
        else:
            error = None
    if error is None:
        return None
    return f'Failed to apply default image tag {go_quote(image)}: couldn\'t parse image name {go_quote(image)}: {error}'


def _image_not_found(image: str) -> str:
    """What containerd answers for an image (or tag) that does not exist, with the name fully qualified."""
    domain, remainder = _split_docker_domain(image)
    ref = f'{domain}/{remainder}'
    m = _IMAGE_REFERENCE.fullmatch(ref)
    if m is not None and not m[2] and not m[3]:
        ref += ':latest'
    return (f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": failed to resolve '
            f'reference "{ref}": {ref}: not found')


def pull_error(bad: BadImages, image: str) -> str | None:
    """Why pulling ``image`` fails, if ``bad`` (the images whose pull fails: a set of names as the pod spec
    writes them, a mapping of them to the runtime's error message, or a predicate returning a message or True)
    says it does."""
    if callable(bad):
        result = bad(image)
    elif isinstance(bad, Mapping):
        result = (bad[image] or True) if image in bad else None
    else:
        result = image in bad
    if not result:
        return None
    return result if isinstance(result, str) else _image_not_found(image)
