"""The parts of a PCM device model as objects with their formulas (drift, read noise, programming).

A :class:`~gpu_model.presets.PCMPreset` names each part (``drift_model``, ``read_noise_model``,
``prog_noise_model``: the strings a TOML ``[device]`` section can set) and holds its parameters;
``preset.drift`` / ``preset.read_noise`` / ``preset.programming`` are the model objects below,
looked up once in the registries (``DRIFT_MODELS``, ``READ_NOISE_MODELS``, ``PROGRAMMING_MODELS``).
The reference engine (:mod:`gpu_model.devices`) calls their methods instead of branching on names;
a new model is one class and one registry entry. Array arguments are backend arrays (``xp``);
units µS and s.
"""
from __future__ import annotations

FLOAT = "float32"

# Joshi et al., Nat. Commun. 11, 2473 (2020), Methods: polynomial / clip constants of its models.
JOSHI_NU_MU = (-0.0155, 0.0244, 0.049, 0.1)       # mu_nu = clip(-0.0155 ln g + 0.0244, 0.049, 0.1)
JOSHI_NU_SIGMA = (-0.0125, -0.0059, 0.008, 0.045) # sigma_nu = clip(-0.0125 ln g - 0.0059, 0.008, 0.045)
JOSHI_QS = (0.0088, 0.65, 0.2)                    # Q_s = min(0.0088 / g^0.65, 0.2)
JOSHI_PROG = (-1.1731, 1.9650, 0.2635)            # sigma_prog = max(c2 g^2 + c1 g + c0, 0) µS


# --- drift: G(t) = G_p ((t - t_p) / t0)^(-nu) for t - t_p > t0 --------------------------------------
class ConstantDrift:
    """nu ~ N(nu_mean, nu_std) per device (JAP 2018: one exponent, nu_std = 0), independent of G."""

    name = "constant"
    nu_depends_on_g = False            # nu is fixed at fabrication: computed once per device

    def drift_free(self, p) -> bool:
        """True when no device can drift (every nu is 0)."""
        return p.nu_mean == 0 and p.nu_std == 0

    def nu(self, p, z, g_prog, xp):
        """Drift exponents of devices with standard-normal draws ``z`` (``g_prog`` unused)."""
        return p.nu_mean + p.nu_std * z


class JoshiDrift:
    """Joshi 2020: nu ~ N(mu_nu(g), sigma_nu(g)), g = G_prog / g_max (clipped, ``JOSHI_NU_*``)."""

    name = "joshi"
    nu_depends_on_g = True

    def drift_free(self, p) -> bool:
        return False

    def nu(self, p, z, g_prog, xp):
        g = xp.maximum(g_prog / p.g_max, 1e-6)
        lg = xp.log(g)
        a, b, lo, hi = JOSHI_NU_MU
        mu = xp.clip(a * lg + b, lo, hi)                  # mu_nu = clip(a ln g + b, lo, hi)
        a, b, lo, hi = JOSHI_NU_SIGMA
        sd = xp.clip(a * lg + b, lo, hi)                  # sigma_nu = clip(a ln g + b, lo, hi)
        return mu + sd * z


# --- read noise: the std (µS) of one read --------------------------------------------------------
class NoReadNoise:
    name = "none"
    time_dependent = False
    silent = True                      # reads are exact: nothing to draw

    def sigma(self, p, g_now, t, t_prog, g_prog, xp):
        return xp.zeros_like(g_now)


class AffineReadNoise:
    """JAP 2018: sigma = read_sigma_slope G + read_sigma_offset (fresh each read)."""

    name = "affine"
    time_dependent = False
    silent = False

    def sigma(self, p, g_now, t, t_prog, g_prog, xp):
        return p.read_sigma_slope * g_now + p.read_sigma_offset


class Joshi1fReadNoise:
    """Joshi 2020 1/f: sigma = G_drift Q_s(G_prog/g_max) sqrt(ln((t + t_read)/(2 t_read))), t = time
    since programming; Q_s = min(c / g^e, q_max) depends on the programmed (target) conductance, as
    in Joshi 2020 / aihwkit. Grows with time, so cached variances are recomputed whenever time moves."""

    name = "joshi_1f"
    time_dependent = True
    silent = False

    def sigma(self, p, g_now, t, t_prog, g_prog, xp):
        dt = xp.maximum(t - t_prog, p.t_read).astype(FLOAT)
        g = xp.maximum(g_prog / p.g_max, 1e-6)
        c, e, qmax = JOSHI_QS
        qs = xp.minimum(c / g ** e, qmax)
        return g_now * qs * xp.sqrt(xp.log((dt + p.t_read) / (2 * p.t_read)))


# --- programming (program-and-verify of initial programming and refresh) -----------------------------
class ExactProgramming:
    """``none``: the target is written exactly (ideal devices: one pulse per ideal step)."""

    name = "none"
    exact = True                       # the target is written as it is
    verified = False                   # no verify loop
    leaves_history = False             # P = 0 after programming


class JoshiProgramming:
    """Joshi 2020: one attempt with sigma = max(c2 g^2 + c1 g + c0, 0) µS, g = target / g_max (already
    a post-verify figure): one pulse and one verify read per device."""

    name = "joshi"
    exact = False
    verified = False
    leaves_history = True

    def sigma(self, p, target, xp):
        g = target / p.g_max
        c2, c1, c0 = JOSHI_PROG
        return xp.maximum(c2 * g * g + c1 * g + c0, 0.0)


class JAPProgramming:
    """JAP 2018 program-and-verify: attempts target + N(0, sigma_SET(target, P=0)) with one verify
    read each, until a read lands within the tolerance (``prog_residual_std``) or
    ``prog_verify_max_pulses`` attempts."""

    name = "jap"
    exact = False
    verified = True
    leaves_history = True


DRIFT_MODELS = {m.name: m for m in (ConstantDrift(), JoshiDrift())}
READ_NOISE_MODELS = {m.name: m for m in (AffineReadNoise(), Joshi1fReadNoise(), NoReadNoise())}
PROGRAMMING_MODELS = {m.name: m for m in (JAPProgramming(), JoshiProgramming(), ExactProgramming())}
