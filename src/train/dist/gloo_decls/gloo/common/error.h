// Declarations only (see README.md): ProcessGroupGloo.hpp includes this but needs nothing from it.
#pragma once
