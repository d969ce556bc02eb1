// f2d2n/data.hpp: IDX files, datasets, batching.
#pragma once

#include <f2d2n/data/dataset.hpp>
#include <f2d2n/data/idx.hpp>
