"""Walking a FUSE-free tree the way the kernel does, for the tree's tests."""

from __future__ import annotations

from mkwfs.tree.tree import BUILD_JSON_NAME, BUILDS_INODE, ROOT_INODE, Attributes, Tree


async def build_dir(tree: Tree, build_id: int) -> Attributes:
    await tree.lookup(ROOT_INODE, b"builds")
    return await tree.lookup(BUILDS_INODE, str(build_id).encode())


async def files(tree: Tree, build_ino: int) -> list[tuple[bytes, Attributes]]:
    """The downloads in a build directory (its entries but ``.build.json``)."""
    return [(name, a) for name, a in await tree.listdir(build_ino) if name != BUILD_JSON_NAME]
