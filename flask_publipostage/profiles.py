"""The five canonical ENT profiles and their French labels."""

from __future__ import annotations

from enum import Enum

from .i18n import lazy_gettext as _l


class Profile(str, Enum):
    TEACHER = "Teacher"
    STUDENT = "Student"
    RELATIVE = "Relative"
    PERSONNEL = "Personnel"
    GUEST = "Guest"

    @property
    def label(self) -> str:
        return str(PROFILE_LABELS[self])

    @property
    def plural_label(self) -> str:
        return str(PROFILE_PLURAL_LABELS[self])


PROFILE_LABELS = {
    Profile.TEACHER: _l("Teacher"),
    Profile.STUDENT: _l("Student"),
    Profile.RELATIVE: _l("Relative"),
    Profile.PERSONNEL: _l("Staff member"),
    Profile.GUEST: _l("Guest"),
}

PROFILE_PLURAL_LABELS = {
    Profile.TEACHER: _l("Teachers"),
    Profile.STUDENT: _l("Students"),
    Profile.RELATIVE: _l("Relatives"),
    Profile.PERSONNEL: _l("Staff"),
    Profile.GUEST: _l("Guests"),
}

#: Display order of profiles (filters, groups sorted "par profil").
PROFILE_ORDER = tuple(Profile)
