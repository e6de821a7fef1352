// Per-environment physics: the model fields a task may set, and how one env's values are written
// into the model copy of the thread that simulates it.
//
// A family names the fields it varies (its layout, e.g. {"body_mass", "actuator_gear"}); each
// env's task row then carries one absolute value per column of those fields, after the
// objective's numbers. Only these columns are ever written, so a thread's model copy holds the
// base model's values everywhere else, and a step depends only on the base model and its env's
// row (bit-identical for any thread count). Derived constants (body_subtreemass, dof_invweight0,
// ...) are not recomputed (no mj_setConst), as when Gymnasium's `model` fields are set directly.
#pragma once

#include <mujoco/mujoco.h>

#include <string>
#include <vector>

namespace bmaml {

// One value of a task row's physics part.
struct PhysicsColumn {
  std::string label;     // e.g. "body_mass[torso]", "geom_friction[floor,0]", "density"
  double default_value;  // the asset's value
  bool positive;         // must be > 0 (masses, inertias); otherwise >= 0
};

class PhysicsLayout {
 public:
  // The fields a task may set, in this order within a row:
  //   body_mass      [nbody - 1]       every body but the world
  //   body_inertia   [(nbody - 1) x 3] principal inertia, per body and axis
  //   dof_damping    [nv]
  //   geom_friction  [ngeom x 3]       sliding, torsional, rolling
  //   actuator_gear  [nu]              column 0 of the gear (a joint transmission's ratio); 0 = dead
  //   density, viscosity [1 each]      mjOption's medium
  // Throws std::invalid_argument on an unknown or repeated name (listing the supported ones).
  PhysicsLayout(const std::vector<std::string>& fields, const mjModel* m);

  int size() const { return static_cast<int>(columns_.size()); }
  const std::vector<PhysicsColumn>& columns() const { return columns_; }
  // values [size()] into m (same sizes as the model the layout was made for).
  void write(mjModel* m, const double* values) const;

 private:
  enum class Field { kBodyMass, kBodyInertia, kDofDamping, kGeomFriction, kActuatorGear, kDensity,
                     kViscosity };
  std::vector<Field> fields_;
  std::vector<PhysicsColumn> columns_;
};

}  // namespace bmaml
