import pytest

from llmco2_sidecar.energy import carbon, embodied, serving
from llmco2_sidecar.errors import InputError
from llmco2_sidecar.hardware import load_gpu


def test_operational_carbon_formula():
    # 3.6 MJ = 1 kWh; at PUE 1.5 and 400 g/kWh: 600 g
    assert carbon.operational_carbon_g(3.6e6, 1.5, 400.0) == pytest.approx(600.0)


def test_regions_have_sources():
    for code, r in carbon.regions().items():
        assert r.source and r.year >= 2020 and 0 < r.g_per_kwh < 1000, code
    assert carbon.region().code == carbon.DEFAULT_REGION == "world"
    with pytest.raises(InputError) as e:
        carbon.region("mars")
    assert e.value.field == "region"


def test_pue_and_ci_validation():
    with pytest.raises(InputError):
        carbon.check_pue(0.9)
    with pytest.raises(InputError):
        carbon.check_carbon_intensity(-1)


def test_embodied_hand_count():
    a100 = load_gpu("A100")  # 826 mm2 at 7 nm: 8.26 cm2 x 1.6 kg/cm2 = 13.216 kg over 5 years
    assert embodied.gpu_embodied_kg(a100) == pytest.approx(13.216)
    one_year = embodied.SECONDS_PER_YEAR
    assert embodied.embodied_carbon_g(a100, one_year) == pytest.approx(13216 / 5)
    assert embodied.embodied_carbon_g(load_gpu("H100"), 2 * one_year, lifetime_years=4) == pytest.approx(8.14 * 1.8 * 1000 / 2)


def test_serving_energy():
    p = serving.serving_power(load_gpu("A100"), 2)
    assert p.host_idle_w == pytest.approx(2 * 500 / 8)  # DGX A100 host idle share
    assert serving.serving_energy_j(2.0, 100.0, 5.0) == 205.0
