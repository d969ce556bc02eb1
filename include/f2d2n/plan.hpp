// f2d2n/plan.hpp: a model and its distribution as one type (distribute<model, policies...>).
#pragma once

#include <f2d2n/plan/description.hpp>
#include <f2d2n/plan/distribute.hpp>
