#include "physics.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace bmaml {
namespace {

constexpr const char* kFieldNames[] = {"body_mass", "body_inertia", "dof_damping", "geom_friction",
                                       "actuator_gear", "density", "viscosity"};

std::string element_name(const mjModel* m, int type, int id) {
  const char* name = mj_id2name(m, type, id);
  if (name && *name) return name;
  std::string unnamed = "#";  // (not "#" + to_string: a false -Wrestrict warning in GCC 12)
  return unnamed.append(std::to_string(id));
}

// A dof's name is its joint's (hinge and slide joints have one dof each).
std::string dof_name(const mjModel* m, int dof) {
  const int joint = m->dof_jntid[dof];
  std::string name = element_name(m, mjOBJ_JOINT, joint);
  if (m->jnt_dofadr[joint] != dof || m->jnt_type[joint] == mjJNT_FREE || m->jnt_type[joint] == mjJNT_BALL)
    name.append(",").append(std::to_string(dof - m->jnt_dofadr[joint]));
  return name;
}

// An actuator's name, else its joint's (Gymnasium's Swimmer names only its joints).
std::string actuator_name(const mjModel* m, int i) {
  const char* name = mj_id2name(m, mjOBJ_ACTUATOR, i);
  if (name && *name) return name;
  if (m->actuator_trntype[i] == mjTRN_JOINT) return element_name(m, mjOBJ_JOINT, m->actuator_trnid[2 * i]);
  std::string unnamed = "#";
  return unnamed.append(std::to_string(i));
}

}  // namespace

PhysicsLayout::PhysicsLayout(const std::vector<std::string>& fields, const mjModel* m) {
  for (const std::string& name : fields) {
    Field f;
    if (name == "body_mass") f = Field::kBodyMass;
    else if (name == "body_inertia") f = Field::kBodyInertia;
    else if (name == "dof_damping") f = Field::kDofDamping;
    else if (name == "geom_friction") f = Field::kGeomFriction;
    else if (name == "actuator_gear") f = Field::kActuatorGear;
    else if (name == "density") f = Field::kDensity;
    else if (name == "viscosity") f = Field::kViscosity;
    else {
      std::string known;
      for (const char* k : kFieldNames) known += (known.empty() ? "" : ", ") + std::string(k);
      throw std::invalid_argument("physics: expected field names among " + known + "; got '" + name + "'");
    }
    if (std::find(fields_.begin(), fields_.end(), f) != fields_.end())
      throw std::invalid_argument("physics: field '" + name + "' is named twice");
    fields_.push_back(f);
    // Three values per element (principal inertias; sliding, torsional, rolling friction).
    auto per_axis = [&](const char* field, int type, int first, int count, const mjtNum* values, bool positive) {
      for (int e = first; e < count; ++e)
        for (int k = 0; k < 3; ++k)
          columns_.push_back({std::string(field) + "[" + element_name(m, type, e) + "," + std::to_string(k) + "]",
                              values[3 * e + k], positive});
    };
    switch (f) {
      case Field::kBodyMass:
        for (int b = 1; b < m->nbody; ++b)
          columns_.push_back({"body_mass[" + element_name(m, mjOBJ_BODY, b) + "]", m->body_mass[b], true});
        break;
      case Field::kBodyInertia:
        per_axis("body_inertia", mjOBJ_BODY, 1, m->nbody, m->body_inertia, true);
        break;
      case Field::kDofDamping:
        for (int v = 0; v < m->nv; ++v)
          columns_.push_back({"dof_damping[" + dof_name(m, v) + "]", m->dof_damping[v], false});
        break;
      case Field::kGeomFriction:
        per_axis("geom_friction", mjOBJ_GEOM, 0, m->ngeom, m->geom_friction, false);
        break;
      case Field::kActuatorGear:
        for (int a = 0; a < m->nu; ++a)
          columns_.push_back({"actuator_gear[" + actuator_name(m, a) + "]", m->actuator_gear[6 * a], false});
        break;
      case Field::kDensity:
        columns_.push_back({"density", m->opt.density, false});
        break;
      case Field::kViscosity:
        columns_.push_back({"viscosity", m->opt.viscosity, false});
        break;
    }
  }
}

void PhysicsLayout::write(mjModel* m, const double* v) const {
  for (Field f : fields_) {
    switch (f) {
      case Field::kBodyMass:
        std::memcpy(m->body_mass + 1, v, (m->nbody - 1) * sizeof(mjtNum));
        v += m->nbody - 1;
        break;
      case Field::kBodyInertia:
        std::memcpy(m->body_inertia + 3, v, 3 * (m->nbody - 1) * sizeof(mjtNum));
        v += 3 * (m->nbody - 1);
        break;
      case Field::kDofDamping:
        std::memcpy(m->dof_damping, v, m->nv * sizeof(mjtNum));
        v += m->nv;
        break;
      case Field::kGeomFriction:
        std::memcpy(m->geom_friction, v, 3 * m->ngeom * sizeof(mjtNum));
        v += 3 * m->ngeom;
        break;
      case Field::kActuatorGear:
        for (int a = 0; a < m->nu; ++a) m->actuator_gear[6 * a] = *v++;
        break;
      case Field::kDensity:
        m->opt.density = *v++;
        break;
      case Field::kViscosity:
        m->opt.viscosity = *v++;
        break;
    }
  }
}

}  // namespace bmaml
