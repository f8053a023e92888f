/**
 * The event streams' bounds read from the environment (OCULUS_HTTP_MAX_STREAMS_PER_ADDRESS,
 * OCULUS_HTTP_MAX_RESUME_EVENTS: a bad value is a ConfigError naming the variable), and the key the
 * per-address cap counts by.
 */
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import {
  DEFAULT_STREAM_LIMITS,
  streamAddressKey,
  streamLimitsFromEnv,
} from "../../src/http/stream-limits.js";

describe("stream limits from the environment", () => {
  it("unset or empty: the defaults (50 streams per address, 50,000 events of resume)", () => {
    expect(streamLimitsFromEnv({})).toEqual({ maxStreamsPerAddress: 50, maxResumeEvents: 50_000 });
    expect(streamLimitsFromEnv({ OCULUS_HTTP_MAX_STREAMS_PER_ADDRESS: " " })).toEqual(DEFAULT_STREAM_LIMITS);
  });

  it("positive integers", () => {
    expect(
      streamLimitsFromEnv({
        OCULUS_HTTP_MAX_STREAMS_PER_ADDRESS: " 7 ",
        OCULUS_HTTP_MAX_RESUME_EVENTS: "1000",
      }),
    ).toEqual({ maxStreamsPerAddress: 7, maxResumeEvents: 1000 });
  });

  it.each([
    ["OCULUS_HTTP_MAX_STREAMS_PER_ADDRESS", "0"],
    ["OCULUS_HTTP_MAX_STREAMS_PER_ADDRESS", "-1"],
    ["OCULUS_HTTP_MAX_STREAMS_PER_ADDRESS", "ten"],
    ["OCULUS_HTTP_MAX_RESUME_EVENTS", "1e3"],
    ["OCULUS_HTTP_MAX_RESUME_EVENTS", "2.5"],
    ["OCULUS_HTTP_MAX_RESUME_EVENTS", "99999999999999999999"],
  ])("refuses %s=%s, naming it", (name, value) => {
    expect(() => streamLimitsFromEnv({ [name]: value })).toThrow(ConfigError);
    expect(() => streamLimitsFromEnv({ [name]: value })).toThrow(
      new RegExp(`^invalid ${name}: must be a positive integer, got "${value.replace(".", "\\.")}"`),
    );
  });
});

describe("the per-address key", () => {
  it.each([
    ["10.0.0.1", "10.0.0.1"],
    ["::ffff:10.0.0.1", "10.0.0.1"],
    ["2001:db8::1", "2001:db8:0:0::/64"],
    ["2001:0db8:0000:0000:ffff::2", "2001:db8:0:0::/64"],
    ["2001:db8:0:1::1", "2001:db8:0:1::/64"],
    ["::1", "0:0:0:0::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
  ])("%s counts as %s", (ip, key) => {
    expect(streamAddressKey(ip)).toBe(key);
  });
});
