import pytest
import pytest_twisted

from meterd.taxid import make_cpf


@pytest_twisted.ensureDeferred
async def test_register_post_and_read_back(server):
    cid = make_cpf("123456780")
    status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": cid, "name": "Ana"})
    assert status == 201 and body["token"]
    status, meter, _ = await server.call("POST", "/cadMedidor", json_body={"id": cid})
    assert (status, meter["id_medidor"]) == (201, 1)


@pytest.mark.slow
def test_twistd_subprocess_keeps_data_across_restart(tmp_path):
    from tests.support import Twistd, http

    server = Twistd(tmp_path / "data").start()
    try:
        cid = make_cpf("987654321")
        assert http("POST", server.url + "/cadCliente", server.token, {"id": cid, "name": "Bia"})[0] == 201
    finally:
        assert server.stop() in (0, -15)  # twistd re-raises SIGTERM after a clean shutdown
        assert "meterd stopped" in server.output()
    server = Twistd(tmp_path / "data").start()
    try:
        assert http("POST", server.url + "/cadCliente", server.token, {"id": cid, "name": "Bia"})[0] == 409
    finally:
        server.stop()
