"""Old home of the dependency graph: the classes moved to :mod:`edgekit.prune.groups`, re-exported here."""

from edgekit.prune.groups import Dependency, DependencyGraph, Group, Member, Node, Rewrite

__all__ = ["Dependency", "DependencyGraph", "Group", "Member", "Node", "Rewrite"]
