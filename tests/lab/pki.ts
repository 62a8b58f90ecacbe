/**
 * A throwaway certificate authority and one server certificate for every lab host name,
 * made with openssl at lab start and never committed.
 * @module
 */

import { run } from "./command.ts";
import { LAB_HOSTS } from "./topology.ts";

/** Paths of the generated PEM files. */
export interface Pki {
  caCert: string;
  serverCert: string;
  serverKey: string;
}

/** Creates the CA and the server certificate under `dir` and returns their paths. */
export async function makePki(dir: string): Promise<Pki> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const p = (name: string) => `${dir}/${name}`;
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await run([
    "openssl",
    "req",
    "-x509",
    ...ec,
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.crt"),
    "-days",
    "7",
    "-subj",
    "/CN=proxy-please lab CA (throwaway)",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  const names = [...Object.values(LAB_HOSTS), "*.wild.test"];
  await Deno.writeTextFile(
    p("server.ext"),
    [
      "basicConstraints=CA:FALSE",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth",
      `subjectAltName=${names.map((n) => `DNS:${n}`).join(",")}`,
    ].join("\n") + "\n",
  );
  await run([
    "openssl",
    "req",
    ...ec,
    "-keyout",
    p("server.key"),
    "-out",
    p("server.csr"),
    "-subj",
    "/CN=allowed.test",
  ]);
  await run([
    "openssl",
    "x509",
    "-req",
    "-in",
    p("server.csr"),
    "-CA",
    p("ca.crt"),
    "-CAkey",
    p("ca.key"),
    "-CAcreateserial",
    "-days",
    "7",
    "-extfile",
    p("server.ext"),
    "-out",
    p("server.crt"),
  ]);
  return { caCert: p("ca.crt"), serverCert: p("server.crt"), serverKey: p("server.key") };
}
